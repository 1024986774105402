import sys

from emvsbayes.cli import main

sys.exit(main())
