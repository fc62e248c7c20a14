"""vfiod's benchmarks (``make bench``); not part of the installed package."""
