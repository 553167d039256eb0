"""``python -m pipeline.inspect``: see `pipeline.app.inspect`."""

import sys

from pipeline.app.inspect import main

if __name__ == "__main__":
    sys.exit(main())
