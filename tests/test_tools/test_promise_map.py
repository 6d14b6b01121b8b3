"""docs/reliability.md maps each promise the docs make to the tests that
assert it: every test it names must exist, so that the map follows the
suite when tests move or are renamed."""
import re

from helpers import REPO


def _named_tests():
    text = (REPO / 'docs' / 'reliability.md').read_text()
    start = text.index('| promise | where stated | test(s) |')
    end = text.index('## Mutation check')
    return re.findall(r'`(tests/[^`:]+)::([A-Za-z0-9_]+)`', text[start:end])


def test_every_test_the_promise_map_names_exists():
    named = _named_tests()
    assert len(named) > 80
    missing = [
        f'{path}::{name}' for path, name in named
        if not (REPO / path).is_file()
        or not re.search(rf'^def {name}\(', (REPO / path).read_text(), re.M)
    ]
    assert not missing, missing
