"""Start the OpenHands agent-server (1.57.0) in its pod the way `scripts/openhands.sh up` starts it.

The session key comes from a file of the Secret volume (only that one key of the Secret is projected into the
pod), never from the environment: the agent's terminal (tmux) inherits the server's environment. The server's
re-export of the key into its own environment is switched off, as in scripts/openhands.sh.
"""

import os
import runpy
import sys
from pathlib import Path

key_file = Path(os.environ.get("OPENHANDS_SESSION_KEY_FILE", "/etc/openhands/session/session-api-key"))
try:
    key = key_file.read_text().strip()
except OSError as exc:
    sys.exit(f"agent-server: cannot read the session key file {key_file}: {exc.strerror} (mount the Secret key)")
if not key:
    sys.exit(f"agent-server: the session key file {key_file} is empty (fill the Secret out of band)")

import openhands.agent_server.config as config  # noqa: E402 (a bad key file fails before the slow imports)

_loaded = config.load_config()
_effective = _loaded.model_copy(update={"session_api_keys": [key]})
config.load_config = lambda *_a, **_k: _effective
config._default_config = _effective
config.export_session_api_key = lambda *_a, **_k: None
# api builds its app (and its Config) when imported: only after the patches above.
import openhands.agent_server.api as api  # noqa: E402

api.export_session_api_key = config.export_session_api_key
del key
sys.argv[0] = "openhands-agent-server"
runpy.run_module("openhands.agent_server", run_name="__main__", alter_sys=True)
