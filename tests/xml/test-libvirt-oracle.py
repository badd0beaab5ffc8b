#!/usr/bin/python3
# test-libvirt-oracle.py: vbackup-xml against the real libvirt 9.0.
#
# libvirt's test driver (test:///path/node.xml, through python3-libvirt)
# parses checkpoint XML, aligns it against its domain and formats it with
# libvirt's own code. For each request below, the checkpoint libvirt
# stores is compared byte for byte with what `vbackup-xml checkpoint
# --domain` prints for the same request and the same creation time; for
# bad requests the error messages are compared. The domain definition
# libvirt prints is also fed through our <domain> round trip (it is
# nested in every checkpoint). TAP on stdout.
import os
import re
import subprocess
import sys
import tempfile

TOOL = sys.argv[1]
results = []


def check(ok, name, detail=""):
    results.append((ok, name, detail))


def finish():
    print("1..%d" % len(results))
    for i, (ok, name, detail) in enumerate(results, 1):
        print("%s %d - %s" % ("ok" if ok else "not ok", i, name))
        if not ok and detail:
            for line in str(detail).splitlines():
                print("# " + line)
    sys.exit(0 if results and all(r[0] for r in results) else 1)


try:
    import libvirt
except ImportError:
    check(False, "python3-libvirt is installed (apt-get install "
          "python3-libvirt libvirt-clients)")
    finish()

libvirt.registerErrorHandler(lambda ctx, err: None, None)

NODE = """<node>
  <domain type='test'>
    <name>guest</name>
    <uuid>11111111-2222-3333-4444-555555555555</uuid>
    <memory>1048576</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <disk type='block' device='disk'><driver name='qemu' type='raw'/>
        <source dev='/dev/sda'/><target dev='hda' bus='ide'/></disk>
      <disk type='file' device='cdrom'><source file='/iso/x.iso'/>
        <target dev='hdc' bus='ide'/><readonly/></disk>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
        <source file='/img/a.qcow2'/><target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
        <source file='/img/b.qcow2'/><target dev='vdb' bus='virtio'/>
        <shareable/></disk>
      <graphics type='vnc' port='-1' passwd='s3cret'/>
    </devices>
  </domain>
</node>
"""

CREATE = [
    "<domaincheckpoint/>",
    "<domaincheckpoint><name>c1</name><description>after "
    "&lt;updates&gt; &amp; it's done</description></domaincheckpoint>",
    "<domaincheckpoint><name>c2</name><disks><disk name='vdb'/></disks>"
    "</domaincheckpoint>",
    "<domaincheckpoint><name>c3</name><disks>"
    "<disk name='/img/b.qcow2' checkpoint='bitmap' bitmap='other'/>"
    "<disk name='vda' checkpoint='no'/></disks></domaincheckpoint>",
    "<domaincheckpoint><name>c4.x_y-z</name><disks>"
    "<disk name='hdc' checkpoint='no'/><disk name='hda'/></disks>"
    "</domaincheckpoint>",
]

FAIL = [
    "<domaincheckpoint><name>e1</name><disks><disk name='vdz'/></disks>"
    "</domaincheckpoint>",
    "<domaincheckpoint><name>e2</name><disks><disk name='vda'/>"
    "<disk name='/img/a.qcow2'/></disks></domaincheckpoint>",
    "<domaincheckpoint><name>e3</name><disks><disk name='hdc'/></disks>"
    "</domaincheckpoint>",
    "<domaincheckpoint><name>../e4</name></domaincheckpoint>",
    "<domaincheckpoint><name>e5</name><disks><disk/></disks>"
    "</domaincheckpoint>",
    "<domaincheckpoint><name>e6</name>",
]


def ours(args, stdin):
    p = subprocess.run([TOOL, "checkpoint"] + args + ["-"], input=stdin,
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


with tempfile.TemporaryDirectory() as tmp:
    node = os.path.join(tmp, "node.xml")
    with open(node, "w") as f:
        f.write(NODE)
    uri = "test://" + node
    conn = libvirt.open(uri)
    dom_xml = conn.lookupByName("guest").XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    conn.close()
    dom_file = os.path.join(tmp, "guest.xml")
    with open(dom_file, "w") as f:
        f.write(dom_xml)

    stored = []
    for i, req in enumerate(CREATE):
        conn = libvirt.open(uri)
        cp = conn.lookupByName("guest").checkpointCreateXML(req, 0)
        want = cp.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_SECURE)
        conn.close()
        ctime = re.search(r"<creationTime>(\d+)<", want).group(1)
        rc, got, err = ours(["--domain", dom_file, "--creation-time", ctime],
                            req)
        check(rc == 0 and got == want, "create %d matches libvirt" % i,
              err + "--- ours\n" + got + "--- libvirt\n" + want)
        stored.append(want)

    # redefine what libvirt stored: libvirt's own redefine output again
    for i, xml in enumerate(stored):
        conn = libvirt.open(uri)
        cp = conn.lookupByName("guest").checkpointCreateXML(
            xml, libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE)
        want = cp.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_SECURE)
        conn.close()
        rc, got, err = ours(["--redefine", "--domain", dom_file], xml)
        check(rc == 0 and got == want, "redefine %d matches libvirt" % i,
              err + "--- ours\n" + got + "--- libvirt\n" + want)

    # a <node> fixture with a file= reference, loaded by libvirt's test
    # driver and by vbackup's node parser (vbackup-xml --domain NODE)
    other_file = os.path.join(tmp, "other.xml")
    with open(other_file, "w") as f:
        f.write(dom_xml.replace("<name>guest</name>", "<name>other</name>")
                .replace("11111111-2222-3333-4444-555555555555",
                         "aaaaaaaa-2222-3333-4444-555555555555"))
    node2 = os.path.join(tmp, "node2.xml")
    with open(node2, "w") as f:
        f.write("<node>\n  <domain file='other.xml'/>\n%s</node>\n" %
                NODE[len("<node>\n"):-len("</node>\n")])
    req = "<domaincheckpoint><name>n1</name></domaincheckpoint>"
    conn = libvirt.open("test://" + node2)
    names = sorted(d.name() for d in conn.listAllDomains())
    cp = conn.lookupByName("other").checkpointCreateXML(req, 0)
    want = cp.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_SECURE)
    conn.close()
    check(names == ["guest", "other"], "node fixture domains", names)
    ctime = re.search(r"<creationTime>(\d+)<", want).group(1)
    rc, got, err = ours(["--domain", node2, "--domain-name", "other",
                         "--creation-time", ctime], req)
    check(rc == 0 and got == want, "node fixture file= domain matches",
          err + "--- ours\n" + got + "--- libvirt\n" + want)

    # a redefinition for another domain (different uuid) is refused
    other = stored[1].replace("11111111-2222-3333-4444-555555555555",
                              "11111111-2222-3333-4444-000000000000")
    FAIL_REDEFINE = [other]

    for i, req in enumerate(FAIL + FAIL_REDEFINE):
        redefine = i >= len(FAIL)
        conn = libvirt.open(uri)
        try:
            conn.lookupByName("guest").checkpointCreateXML(
                req, libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE
                if redefine else 0)
            want = None
        except libvirt.libvirtError as e:
            want = "error: %s\n" % e.get_error_message()
        conn.close()
        args = ["--domain", dom_file] + (["--redefine"] if redefine else [])
        rc, got, err = ours(args, req)
        check(want is not None and rc == 1 and err == want,
              "error %d matches libvirt" % i,
              "ours: %r\nlibvirt: %r" % (err, want))

finish()
