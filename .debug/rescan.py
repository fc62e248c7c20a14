import os, struct, subprocess, time
if "vfiod.testguest=1" not in open("/proc/cmdline").read():
    raise SystemExit("test guest only")
def w(p, v):
    try:
        fd = os.open(p, os.O_WRONLY)
    except OSError as e:
        print("OPEN ERR", p, e); return
    try:
        os.write(fd, v.encode()); print("ok", p, repr(v))
    except OSError as e:
        print("ERR", p, repr(v), e)
    finally:
        os.close(fd)
def r(p):
    try: return open(p).read().strip()
    except Exception as e: return f"<{e}>"
def drv(d):
    return os.path.basename(os.readlink(d + "/driver")) if os.path.exists(d + "/driver") else None
def link(addr):
    cfg = open(f"/sys/bus/pci/devices/{addr}/config", "rb").read()
    ptr = cfg[0x34]
    while ptr:
        if cfg[ptr] == 0x10:
            ptype = (struct.unpack_from("<H", cfg, ptr + 2)[0] >> 4) & 0xF
            lcap = struct.unpack_from("<I", cfg, ptr + 0x0C)[0]
            lsta = struct.unpack_from("<H", cfg, ptr + 0x12)[0]
            return f"{addr} len={len(cfg)} cap@{ptr:#x} type={ptype} lnkcap={lcap:#x} lnksta={lsta:#x} dllla={(lsta >> 13) & 1} dlllarc={(lcap >> 20) & 1}"
        ptr = cfg[ptr + 1]
    return f"{addr}: no pcie cap"
for a in ("0000:00:02.0", "0000:00:03.0", "0000:00:04.0", "0000:00:05.0", "0000:02:00.0", "0000:01:00.0"):
    print(link(a))
NIC = "0000:02:00.0"; D = f"/sys/bus/pci/devices/{NIC}"
subprocess.run(["modprobe", "vfio-pci"])
w(D + "/driver_override", "vfio-pci"); w(D + "/driver/unbind", NIC); w("/sys/bus/pci/drivers_probe", NIC)
g = os.path.basename(os.readlink(D + "/iommu_group"))
print("driver", drv(D), "group", g)
fd = os.open(f"/dev/vfio/{g}", os.O_RDWR)
print("autoprobe", r("/sys/bus/pci/drivers_autoprobe"))
w("/sys/bus/pci/drivers_autoprobe", "0")
w(D + "/remove", "1")
print("pci_bus", os.listdir("/sys/class/pci_bus"))
w("/sys/class/pci_bus/0000:02/rescan", "1")
print("exists", os.path.exists(D), "override", r(D + "/driver_override"), "driver", drv(D))
w(D + "/driver_override", "vfio-pci")
w("/sys/bus/pci/drivers_autoprobe", "1")
w("/sys/bus/pci/drivers_probe", NIC)
time.sleep(0.5)
print("driver now", drv(D), "group", os.path.basename(os.readlink(D + "/iommu_group")), os.listdir("/dev/vfio"))
os.close(fd)
time.sleep(0.5)
w("/sys/bus/pci/drivers_probe", NIC)
print("after closing the old group fd and probing again:", drv(D), os.listdir("/dev/vfio"))
# second round without holding the group fd
g = os.path.basename(os.readlink(D + "/iommu_group"))
w("/sys/bus/pci/drivers_autoprobe", "0")
w(D + "/remove", "1")
w("/sys/class/pci_bus/0000:02/rescan", "1")
w(D + "/driver_override", "vfio-pci")
w("/sys/bus/pci/drivers_autoprobe", "1")
w("/sys/bus/pci/drivers_probe", NIC)
print("no fence round:", drv(D), os.listdir("/dev/vfio"))
print(link("0000:00:03.0"))
subprocess.run("dmesg | tail -40", shell=True)
