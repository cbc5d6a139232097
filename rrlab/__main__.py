import sys

from rrlab.cli.main import main

sys.exit(main())
