# Runs Debian's installed cloud-init phone_home module (cc_phone_home,
# cloud-init 22.4 on Debian 12) against a provisiond URL, with the
# configuration a user writes in #cloud-config. Driven by
# TestRealCloudInitPhoneHome (cloudinit_real_test.go); not a tool for users.
#
#   python3 cloudinit_phone_home.py BASE_URL INSTANCE_ID HOSTNAME
#
# Prints {"ok": true} when the module's POST got an answer cloud-init
# accepts, {"ok": false} when it logged that it failed.
import json
import logging
import sys
import tempfile
from types import SimpleNamespace

from cloudinit import helpers
from cloudinit.config import cc_phone_home

base, instance_id, hostname = sys.argv[1], sys.argv[2], sys.argv[3]
tmp = tempfile.mkdtemp()


class Cloud:
    paths = helpers.Paths({"cloud_dir": tmp, "run_dir": tmp})

    def get_instance_id(self):
        return instance_id

    def get_hostname(self, fqdn=False):
        return SimpleNamespace(hostname=hostname + (".example" if fqdn else ""))


cfg = {
    "phone_home": {
        "url": base + "/phone-home/$INSTANCE_ID",
        "post": ["instance_id", "hostname", "fqdn", "pub_key_ed25519"],
        "tries": 1,
    }
}


class Failed(logging.Handler):
    failed = False

    def emit(self, record):
        if "Failed to post phone home data" in record.getMessage():
            Failed.failed = True


log = logging.getLogger("phone_home")
log.addHandler(Failed())
log.setLevel(logging.DEBUG)
cc_phone_home.handle("phone_home", cfg, Cloud(), log, [])
print(json.dumps({"ok": not Failed.failed}))
