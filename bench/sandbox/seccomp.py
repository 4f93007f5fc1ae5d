"""A seccomp filter for the sandbox, as the classic BPF program bwrap's `--seccomp FD` loads.

bubblewrap applies no system-call filter of its own (bwrap.xml: "--seccomp FD: Load and use
seccomp rules from FD. The rules need to be in the form of a compiled cBPF program"); Flatpak
and Docker pass one. Ours refuses what model-written code never needs and what reaches past
the namespaces or the resource limits:

- the kernel keyrings (add_key, request_key, keyctl): keyrings are not namespaced, and the
  sandbox inherits the bench's session keyring (keyrings(7): "a session keyring is inherited
  across fork() and execve()"); keys in it are readable by whoever possesses the keyring,
  whatever its uid (security/keys/permission.c key_task_permission: possessor permissions);
- other processes' memory (ptrace, process_vm_readv/writev, pidfd_getfd): the sandbox's
  PID 1 is bwrap's init, same uid and dumpable (bubblewrap.c drop_privs: PR_SET_DUMPABLE 1);
  an answer that attaches to it can clear its parent-death signal and outlive the bench;
- new namespaces and mounts (unshare, setns, clone with CLONE_NEW*, clone3, mount and the new
  mount API, pivot_root, chroot): bwrap's --disable-userns does this only from 0.8.0;
- memory the per-process address-space limit does not count: memfd_create and memfd_secret
  (RLIMIT_FSIZE caps each memfd, not their number), System V shared memory, message queues
  and semaphores (a fresh IPC namespace allows segments up to SHMMAX), POSIX message queues,
  io_uring and userfaultfd;
- socket families other than AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK: AF_VSOCK is not
  confined by the network namespace and reaches the hypervisor (WSL2, cloud VMs);
- the rest of Docker's default deny list that applies to an unprivileged process (bpf,
  perf_event_open, kexec, modules, acct, swap, reboot, syslog, quotactl, file handles,
  lookup_dcookie, uselib).

Refused calls fail with EPERM (EAFNOSUPPORT for a socket family, ENOSYS for clone3 so that
glibc falls back to clone, whose flags the filter can read). Calls of another ABI (i386 via
int 0x80 on x86_64, x32) are refused too: the numbers below hold for the native ABI only.
"""

from __future__ import annotations

import errno
import platform
import struct

# From linux/audit.h: AUDIT_ARCH_X86_64 = EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000  # arch/x86/include/uapi/asm/unistd.h

# Syscall numbers: x86_64 from arch/x86/entry/syscalls/syscall_64.tbl (asm/unistd_64.h),
# aarch64 from the generic table include/uapi/asm-generic/unistd.h. tests/test_sandbox.py checks
# them against the installed kernel headers (linux-libc-dev).
DENIED = {
    # name: (x86_64, aarch64)
    "add_key": (248, 217),
    "request_key": (249, 218),
    "keyctl": (250, 219),
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "pidfd_getfd": (438, 438),
    "unshare": (272, 97),
    "setns": (308, 268),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "memfd_create": (319, 279),
    "memfd_secret": (447, 447),
    "shmget": (29, 194),
    "msgget": (68, 186),
    "semget": (64, 190),
    "mq_open": (240, 180),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "userfaultfd": (323, 282),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "acct": (163, 89),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "syslog": (103, 116),
    "quotactl": (179, 60),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "lookup_dcookie": (212, 18),
    "uselib": (134, None),  # not in the generic table
}
CLONE = (56, 220)
CLONE3 = (435, 435)
SOCKET = (41, 198)

# linux/sched.h: CLONE_NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
CLONE_NEW_ANY = 0x00000080 | 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000
CLONE_NEW_ANY |= 0x10000000 | 0x20000000 | 0x40000000
# linux/socket.h: AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
SOCKET_FAMILIES = (1, 2, 10, 16)

# linux/filter.h, linux/seccomp.h
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # struct seccomp_data offsets (args[0] low word: little-endian)


def machine() -> str:
    m = platform.machine().lower()
    return "aarch64" if m == "arm64" else m


def supported() -> bool:
    return machine() in AUDIT_ARCH


def program(arch: str | None = None) -> bytes:
    """The filter as bytes: struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}, native order."""
    arch = arch or machine()
    if arch not in AUDIT_ARCH:
        raise ValueError(f"no seccomp filter for {arch} (x86_64 and aarch64 only)")
    col = 0 if arch == "x86_64" else 1
    denied = sorted({nrs[col] for nrs in DENIED.values() if nrs[col] is not None})
    # (code, jump-if-true label, jump-if-false label, k); labels resolve to relative offsets
    ops: list[tuple[int, str | None, str | None, int] | str] = [
        (_LD_W_ABS, None, None, _ARCH),
        (_JEQ_K, None, "enosys", AUDIT_ARCH[arch]),
        (_LD_W_ABS, None, None, _NR),
    ]
    if arch == "x86_64":
        ops.append((_JGE_K, "eperm", None, X32_SYSCALL_BIT))
    ops += [(_JEQ_K, "eperm", None, nr) for nr in denied]
    ops += [
        (_JEQ_K, "enosys", None, CLONE3[col]),
        (_JEQ_K, "clone", None, CLONE[col]),
        (_JEQ_K, "socket", "allow", SOCKET[col]),
        "clone",
        (_LD_W_ABS, None, None, _ARG0_LOW),
        (_JSET_K, "eperm", "allow", CLONE_NEW_ANY),
        "socket",
        (_LD_W_ABS, None, None, _ARG0_LOW),
        *[(_JEQ_K, "allow", None, family) for family in SOCKET_FAMILIES],
        (_RET_K, None, None, _RET_ERRNO | errno.EAFNOSUPPORT),
        "allow",
        (_RET_K, None, None, _RET_ALLOW),
        "eperm",
        (_RET_K, None, None, _RET_ERRNO | errno.EPERM),
        "enosys",
        (_RET_K, None, None, _RET_ERRNO | errno.ENOSYS),
    ]
    labels: dict[str, int] = {}
    insns: list[tuple[int, str | None, str | None, int]] = []
    for op in ops:
        if isinstance(op, str):
            labels[op] = len(insns)
        else:
            insns.append(op)
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(insns):
        offsets = [0 if label is None else labels[label] - i - 1 for label in (jt, jf)]
        if any(not 0 <= off <= 255 for off in offsets):
            raise AssertionError(f"jump out of range at {i}")
        out += struct.pack("=HBBI", code, offsets[0], offsets[1], k)
    return bytes(out)
