import sys

from fileshare.cli import main

sys.exit(main())
