"""``python -m xent_fast`` (and the ``xent-fast`` command): ``score``, ``demo`` (the
default) and ``config``; ``--help`` tells more."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
