"""``python -m stef_ray`` is the ``stef-ray`` command."""

import sys

from stef_ray.cli.main import main

sys.exit(main())
