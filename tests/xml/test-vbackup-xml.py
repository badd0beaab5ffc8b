#!/usr/bin/python3
# test-vbackup-xml.py: the vbackup-xml tool against libvirt's backup
# fixtures (the harness of genericxml2xmltest, driven through the CLI),
# the checkpoint redefine fixture, error output and exit codes, and an
# xmllint --relaxng check of what it prints. TAP on stdout.
import os
import re
import subprocess
import sys
import tempfile

TOOL = sys.argv[1]
SHARED = os.environ.get("VBK_SHARED_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared")
FIX = os.path.join(SHARED, "conformance", "libvirt")
SCHEMAS = "/usr/share/libvirt/schemas"
results = []


def check(ok, name, detail=""):
    results.append((ok, name, detail))


def run(args, stdin=None):
    p = subprocess.run([TOOL] + args, input=stdin, capture_output=True,
                       text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def fake_domain(path, names):
    disks = "".join(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        "<source file='/fake/%s.qcow2'/><target dev='%s'/></disk>" % (n, n)
        for n in names + ["vdextradisk"])
    with open(path, "w") as f:
        f.write("<domain type='qemu'><name>fake</name><memory>1024</memory>"
                "<devices>%s</devices></domain>" % disks)


def xmllint_ok(text, rng, tmp):
    doc = os.path.join(tmp, "out.xml")
    with open(doc, "w") as f:
        f.write(text)
    p = subprocess.run(["xmllint", "--noout", "--relaxng",
                        os.path.join(SCHEMAS, rng), doc],
                       capture_output=True, text=True)
    return p.returncode == 0


with tempfile.TemporaryDirectory() as tmp:
    indir = os.path.join(FIX, "domainbackupxml2xmlin")
    names = sorted(n for n in os.listdir(indir) if n.endswith(".xml"))
    check(len(names) >= 8, "backup fixtures present (%d)" % len(names))
    for n in names:
        src = os.path.join(indir, n)
        with open(src) as f:
            disks = re.findall(r"<disk name='([^']+)'", f.read())
        dom = os.path.join(tmp, "dom-" + n)
        fake_domain(dom, disks)
        args = ["backup", "--domain", dom, "--suffix", "SUFFIX"]
        internal = "-internal-invalid" in n
        if internal:
            args.append("--internal")
        rc, out, err = run(args + [src])
        with open(os.path.join(FIX, "domainbackupxml2xmlout", n)) as f:
            expect = f.read()
        check(rc == 0 and out == expect, "backup %s round-trips" % n,
              err + out)
        if not internal:
            check(xmllint_ok(out, "domainbackup.rng", tmp),
                  "backup %s output validates" % n)

    red = os.path.join(FIX, "qemudomaincheckpointxml2xmlout", "redefine.xml")
    with open(red) as f:
        expect = f.read()
    rc, out, err = run(["checkpoint", "--redefine", red])
    check(rc == 0 and out == expect, "checkpoint redefine round-trips", err)
    check(xmllint_ok(out, "domaincheckpoint.rng", tmp),
          "checkpoint redefine output validates")

    # creation with a domain: the checkpoint covers the writable disks
    # and records the domain; both validate against the schema
    dom = os.path.join(tmp, "cp-dom.xml")
    fake_domain(dom, ["vda"])
    rc, out, err = run(["checkpoint", "--domain", dom, "--creation-time",
                        "1525889631", "-"], "<domaincheckpoint/>")
    check(rc == 0 and "<disk name='vda' checkpoint='bitmap' "
          "bitmap='1525889631'/>" in out and "<domain type='qemu'>" in out,
          "checkpoint create aligns against the domain", err + out)
    check(xmllint_ok(out, "domaincheckpoint.rng", tmp),
          "checkpoint create output validates")

    for n in ("disk-invalid.xml", "name-invalid.xml"):
        rc, out, err = run(["checkpoint", os.path.join(
            FIX, "qemudomaincheckpointxml2xmlin", n)])
        check(rc == 1 and out == "" and err.startswith(
            "error: XML document failed to validate against schema: "
            "Unable to validate doc against"), "checkpoint %s rejected" % n,
            err)

    cases = [
        (["backup", "--no-validate", "-"], "<domainbackup mode='x'/>",
         "error: unsupported configuration: unknown backup mode 'x'\n"),
        (["backup", "--domain", dom, "-"],
         "<domainbackup><disks><disk name='vdz' type='file'/></disks>"
         "</domainbackup>",
         "error: unsupported configuration: no disk named 'vdz'\n"),
        (["checkpoint", "--redefine", "-"], "<domaincheckpoint/>",
         "error: XML error: a redefined checkpoint must have a name\n"),
        (["backup", "-"], "<domainbackup>",
         "error: (domain_backup):1: Premature end of data in tag "
         "domainbackup line 1\n<domainbackup>\n--------------^\n"),
    ]
    for args, stdin, expect in cases:
        rc, out, err = run(args, stdin)
        check(rc == 1 and err == expect and out == "",
              "error: %s" % expect.strip().splitlines()[0], repr(err))

    rc, out, err = run(["frobnicate", "-"], "<x/>")
    check(rc == 2 and "backup" in err, "unknown command is a usage error")

print("1..%d" % len(results))
for i, (ok, name, detail) in enumerate(results, 1):
    print("%s %d - %s" % ("ok" if ok else "not ok", i, name))
    if not ok and detail:
        for line in detail.splitlines():
            print("# " + line)
sys.exit(0 if all(r[0] for r in results) else 1)
