import sys

from celeriac.cli import main

sys.exit(main())
