# Runs Debian's installed cloud-init (python3-cloudinit, 22.4 on Debian 12)
# against a metadata URL and prints what it read as JSON. Driven by
# TestRealCloudInit (cloudinit_real_test.go); not a tool for users.
#
#   python3 cloudinit_real.py BASE_URL MODE
#
# MODE "ec2-baremetal": DataSourceEc2._get_data() as on a bare-metal host
#   (DMI does not say AWS, so cloud_name is "unknown"): plain GETs, no token.
# MODE "ec2-imdsv2": as on AWS (cloud_name forced to "aws"): the real
#   wait_for_metadata_service() PUTs /latest/api/token and the real
#   helpers read user-data and meta-data with the token header. (The full
#   AWS crawl also needs dynamic/instance-identity, which provisiond does
#   not serve, so only these two reads are run.)
# MODE "nocloud": util.read_seeded(BASE_URL/nocloud/), which is what
#   DataSourceNoCloud does for a seedfrom URL.
import json
import logging
import sys
import tempfile

from cloudinit import distros, helpers, util
from cloudinit.sources import DataSourceEc2
from cloudinit.sources.helpers import ec2

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

base, mode = sys.argv[1], sys.argv[2]
tmp = tempfile.mkdtemp()
paths = helpers.Paths({"cloud_dir": tmp, "run_dir": tmp})
distro = distros.fetch("debian")("debian", {}, paths)
cfg = {
    "datasource": {
        "Ec2": {
            "metadata_urls": [base],
            "max_wait": 10,
            "timeout": 5,
            "strict_id": False,
        }
    }
}


def text(b):
    if b is None:
        return None
    return b.decode() if isinstance(b, bytes) else str(b)


from cloudinit import version  # noqa: E402

out = {"version": version.version_string()}

if mode == "ec2-baremetal":
    ds = DataSourceEc2.DataSourceEc2(cfg, distro, paths)
    ds._cloud_name = "unknown"
    out["ok"] = bool(ds._get_data())
    out["user_data"] = text(ds.userdata_raw)
    md = ds.metadata or {}
    out["instance_id"] = md.get("instance-id")
    out["hostname"] = md.get("local-hostname")
    out["public_keys"] = sorted((md.get("public-keys") or {}).keys())
elif mode == "ec2-imdsv2":
    ds = DataSourceEc2.DataSourceEc2(cfg, distro, paths)
    ds._cloud_name = "aws"
    out["ok"] = bool(ds.wait_for_metadata_service())
    out["token"] = bool(ds._api_token)
    ud = ec2.get_instance_userdata(
        ds.min_metadata_version, ds.metadata_address, headers_cb=ds._get_headers
    )
    md = ec2.get_instance_metadata(
        ds.min_metadata_version, ds.metadata_address, headers_cb=ds._get_headers
    )
    out["user_data"] = text(ud)
    out["instance_id"] = md.get("instance-id")
    out["hostname"] = md.get("local-hostname")
elif mode == "nocloud":
    try:
        md, ud, _ = util.read_seeded(base + "/nocloud/", timeout=5, retries=0)
        out["ok"] = True
        out["user_data"] = text(ud)
        out["instance_id"] = (md or {}).get("instance-id")
    except Exception as e:  # the seed failed: cloud-init moves on
        out["ok"] = False
        out["error"] = str(e)
else:
    sys.exit("unknown mode " + mode)

json.dump(out, sys.stdout)
