"""``python -m pipeline.validate``: see `pipeline.app.validate`."""

import sys

from pipeline.app.validate import main

if __name__ == "__main__":
    sys.exit(main())
