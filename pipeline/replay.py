"""``python -m pipeline.replay``: see `pipeline.app.replay`."""

import sys

from pipeline.app.replay import main

if __name__ == "__main__":
    sys.exit(main())
