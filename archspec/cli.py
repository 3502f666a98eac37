"""Placeholder; replaced by the full command line."""
def main(argv=None):
    return 0
