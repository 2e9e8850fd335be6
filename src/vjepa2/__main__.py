import sys

from vjepa2.cli import main

sys.exit(main())
