"""The config tests' capture of what add_infobatch logs."""
import logging

import pytest
from mmengine.logging import MMLogger


class Records(logging.Handler):
    """What the current MMLogger logs (it has no parent for caplog)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    @property
    def text(self):
        return '\n'.join(r.getMessage() for r in self.records)

    def messages(self, level=logging.INFO):
        return [r.getMessage() for r in self.records if r.levelno == level]

    def clear(self):
        self.records.clear()


@pytest.fixture
def log():
    """The records of the current MMLogger at INFO and above."""
    logger = MMLogger.get_current_instance()
    level, records = logger.level, Records()
    logger.setLevel(logging.INFO)
    logger.addHandler(records)
    yield records
    logger.removeHandler(records)
    logger.setLevel(level)
