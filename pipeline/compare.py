"""``python -m pipeline.compare``: see `pipeline.app.compare`."""

import sys

from pipeline.app.compare import main

if __name__ == "__main__":
    sys.exit(main())
