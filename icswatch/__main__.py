import sys

from icswatch.cli import main

sys.exit(main())
