"""``python -m mgdm_audio`` runs the ``mgdm-audio`` command line (useful from a source checkout)."""

import sys

from mgdm_audio.cli import main

sys.exit(main())
