"""``python -m pipeline.backends``: list the backends (see `pipeline.app.backends_command`)."""

import sys

from pipeline.app.backends_command import main  # the command is the app's; the backends do not import it

if __name__ == "__main__":
    sys.exit(main())
