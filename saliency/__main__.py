import sys

from saliency.cli import main

sys.exit(main())
