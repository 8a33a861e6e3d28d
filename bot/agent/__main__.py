"""``python3 -m bot.agent …``"""

import sys

from bot.agent.main import main

sys.exit(main())
