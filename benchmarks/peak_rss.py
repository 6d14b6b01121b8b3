"""The process's resident and peak memory, as Linux counts it, for the
benchmarks that measure what a step adds to the peak."""


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB, e.g. 'VmRSS' or 'VmHWM'."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} is not in /proc/self/status')


def reset_peak_rss() -> None:
    """Start VmHWM again from the current RSS (Linux >= 4.0)."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
