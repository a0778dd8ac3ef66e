//! `--isolate`: the command runs in its own network namespace whose only
//! way out is airlock.
//!
//! Two processes take part, and no thread of the tokio runtime ever changes
//! namespace:
//!
//! 1. **airlock run** (outside) binds a Unix socket in its private run
//!    directory and spawns a fresh copy of itself (`/proc/self/exe run
//!    --netns-helper SOCKET --netns-port PORT -- CMD...`) with the command's
//!    environment.
//! 2. **The helper** is single-threaded when it starts, so `unshare` applies
//!    to the whole process. It creates a network namespace
//!    (`unshare(CLONE_NEWNET)` as root; `CLONE_NEWUSER | CLONE_NEWNET` with a
//!    one-uid identity map otherwise), brings `lo` up over rtnetlink, binds
//!    `127.0.0.1:PORT` *inside* the namespace, and hands that listening
//!    socket to airlock outside over the Unix socket (`SCM_RIGHTS`; a
//!    filesystem Unix socket is reachable across network namespaces). Once
//!    airlock acknowledges, the helper `exec`s the command: same pid, so
//!    airlock's signals and the exit status are the command's own.
//! 3. airlock accepts connections on the inner listener (a socket keeps the
//!    namespace it was created in, whoever calls `accept`) and relays each
//!    one to the proxy port.
//!
//! Inside, `lo` is the only interface and there is no default route: a
//! connection to any non-loopback address fails at once with "Network is
//! unreachable", a loopback address is the namespace's own (nothing listens
//! there but the bridged proxy port), and no resolver is reachable, so DNS
//! fails too. A tool that ignores the proxy variables gets an error, never a
//! bypass.
//!
//! What it does not isolate: the filesystem. Unix sockets bound to paths
//! (a Docker socket, an ssh-agent, D-Bus, nscd) stay reachable; combine with
//! a mount namespace or container for those. Abstract Unix sockets are per
//! network namespace and are cut off.
//!
//! Unprivileged, the command also runs in a user namespace that maps only
//! the caller's uid and gid (to themselves): its identity is unchanged, but
//! files of other users show as the overflow user (`nobody`) and setuid
//! programs such as `sudo` gain nothing. As root there is no user namespace.
//!
//! Requirements: Linux, and either root (CAP_SYS_ADMIN) or unprivileged user
//! namespaces (`kernel.unprivileged_userns_clone = 1` where that sysctl
//! exists, `user.max_user_namespaces > 0`, and on Ubuntu 24.04+
//! `kernel.apparmor_restrict_unprivileged_userns = 0` or an AppArmor profile
//! allowing it). Without them airlock refuses to run the command.

use std::io::{IoSlice, IoSliceMut, Read as _, Write as _};
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, TcpListener as StdTcpListener};
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketType,
};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::task::JoinHandle;

/// How long each side waits for the other during the hand-over.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// The byte airlock sends once it holds the inner listener.
const ACK: u8 = b'k';

// ---------------------------------------------------------------------------
// Inside: the helper.
// ---------------------------------------------------------------------------

/// The helper's whole life: enter a new network namespace, bring `lo` up,
/// bind the inner proxy port, hand it to airlock, then become `command`.
/// Returns only on failure: 125 before the command starts, 126/127 when it
/// cannot be executed.
pub fn helper(socket: &Path, port: u16, command: &[String]) -> ExitCode {
    if let Err(e) = prepare(socket, port) {
        eprintln!("airlock run --isolate: {e:#}");
        eprintln!("airlock run --isolate: the command was not started (it never runs unisolated)");
        return ExitCode::from(super::EXIT_SETUP);
    }
    let Some((program, args)) = command.split_first() else {
        eprintln!("airlock run --isolate: no command given");
        return ExitCode::from(super::EXIT_SETUP);
    };
    let err = std::process::Command::new(program).args(args).exec();
    super::report_spawn_error(program, &err)
}

fn prepare(socket: &Path, port: u16) -> anyhow::Result<()> {
    enter_network_namespace()?;
    loopback_up().context("cannot bring up the loopback interface in the new namespace")?;
    let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port} inside the namespace"))?;
    let mut stream = StdUnixStream::connect(socket)
        .with_context(|| format!("cannot reach airlock at {}", socket.display()))?;
    stream.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDOVER_TIMEOUT))?;
    let fds = [listener.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        anyhow::bail!("cannot build the SCM_RIGHTS message");
    }
    rustix::net::sendmsg(
        &stream,
        &[IoSlice::new(b"L")],
        &mut control,
        SendFlags::empty(),
    )
    .context("cannot hand the inner listener to airlock")?;
    let mut ack = [0u8; 1];
    stream
        .read_exact(&mut ack)
        .context("airlock did not take the inner listener")?;
    if ack[0] != ACK {
        anyhow::bail!("airlock did not take the inner listener (unexpected reply)");
    }
    // `listener` and `stream` are close-on-exec: the command inherits neither.
    Ok(())
}

/// `unshare(CLONE_NEWNET)`, or a user namespace with it when that is what
/// this process may do.
fn enter_network_namespace() -> anyhow::Result<()> {
    use rustix::thread::UnshareFlags;
    let euid = rustix::process::geteuid();
    let egid = rustix::process::getegid();
    let mut tried = Vec::new();
    if euid.is_root() {
        match unshare(UnshareFlags::NEWNET) {
            Ok(()) => return Ok(()),
            // Root without CAP_SYS_ADMIN (a container): try a user namespace.
            Err(e) => tried.push(format!(
                "unshare(CLONE_NEWNET) as root: {}",
                explain(e, false)
            )),
        }
    }
    if let Err(e) = unshare(UnshareFlags::NEWUSER | UnshareFlags::NEWNET) {
        tried.push(format!(
            "unshare(CLONE_NEWUSER|CLONE_NEWNET): {}",
            explain(e, true)
        ));
        return Err(namespace_error(&tried));
    }
    // Map our own uid/gid to themselves: the command keeps its identity, and
    // this process holds CAP_NET_ADMIN over the namespace it just made until
    // it execs the command.
    let (uid, gid) = (euid.as_raw(), egid.as_raw());
    let map = |file: &str, text: String| {
        std::fs::write(file, &text).with_context(|| format!("cannot write {file} ({text:?})"))
    };
    map("/proc/self/setgroups", "deny".to_owned())?;
    map("/proc/self/uid_map", format!("{uid} {uid} 1\n"))?;
    map("/proc/self/gid_map", format!("{gid} {gid} 1\n"))?;
    Ok(())
}

#[expect(
    deprecated,
    reason = "rustix deprecates the safe `unshare` because CLONE_FILES can invalidate other threads' fds; \
              only NEWNET/NEWUSER are passed here, and the crate forbids `unsafe`"
)]
fn unshare(flags: rustix::thread::UnshareFlags) -> rustix::io::Result<()> {
    rustix::thread::unshare(flags)
}

/// The errno, and what it means here.
fn explain(e: rustix::io::Errno, user_ns: bool) -> String {
    use rustix::io::Errno;
    let why = match e {
        Errno::PERM if user_ns => {
            "user namespaces are not allowed here (kernel.unprivileged_userns_clone = 0, an AppArmor \
             restriction, or a container's seccomp filter)"
        }
        Errno::PERM => "no CAP_SYS_ADMIN (a container that drops it?)",
        Errno::NOSPC => "the user-namespace limit is reached (user.max_user_namespaces)",
        Errno::INVAL if user_ns => "the process is multi-threaded",
        Errno::NOSYS => "the kernel has no namespace support",
        _ => "",
    };
    let e = std::io::Error::from(e);
    if why.is_empty() {
        e.to_string()
    } else {
        format!("{e}: {why}")
    }
}

fn namespace_error(tried: &[String]) -> anyhow::Error {
    let sysctl = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "absent".to_owned())
    };
    anyhow::anyhow!(
        "cannot create a network namespace: {}. --isolate needs root with CAP_SYS_ADMIN, or unprivileged \
         user namespaces (here: euid {}, kernel.unprivileged_userns_clone = {}, user.max_user_namespaces = {}, \
         kernel.apparmor_restrict_unprivileged_userns = {}). Enable them (e.g. sysctl -w \
         user.max_user_namespaces=10000 kernel.unprivileged_userns_clone=1), run as root, or run without --isolate",
        tried.join("; "),
        rustix::process::geteuid().as_raw(),
        sysctl("/proc/sys/kernel/unprivileged_userns_clone"),
        sysctl("/proc/sys/user/max_user_namespaces"),
        sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
    )
}

/// Sets IFF_UP on `lo` with an rtnetlink RTM_NEWLINK request (no ioctl, no
/// `ip` binary). The kernel gives it 127.0.0.1/8 and ::1 once up.
fn loopback_up() -> anyhow::Result<()> {
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_ACK: u16 = 0x4;
    const NLMSG_ERROR: u16 = 2;
    const IFF_UP: u32 = 0x1;
    const LOOPBACK_IFINDEX: u32 = 1;

    let inet = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)?;
    let index = rustix::net::netdevice::name_to_index(&inet, "lo").unwrap_or(LOOPBACK_IFINDEX);
    let index = i32::try_from(index).context("loopback index out of range")?;
    let nl = rustix::net::socket(
        AddressFamily::NETLINK,
        SocketType::RAW,
        None, // NETLINK_ROUTE is protocol 0
    )?;
    // struct nlmsghdr (16 bytes) + struct ifinfomsg (16 bytes), native endian.
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes()); // nlmsg_type
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes()); // nlmsg_flags
    msg.extend_from_slice(&1u32.to_ne_bytes()); // nlmsg_seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
    msg.extend_from_slice(&[0u8, 0u8]); // ifi_family = AF_UNSPEC, pad
    msg.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    msg.extend_from_slice(&index.to_ne_bytes()); // ifi_index
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    rustix::net::sendto(
        &nl,
        &msg,
        SendFlags::empty(),
        &rustix::net::netlink::SocketAddrNetlink::new(0, 0),
    )?;
    let mut buf = [0u8; 512];
    let (n, _) = rustix::net::recv(&nl, &mut buf, RecvFlags::empty())?;
    let field = |at: usize, len: usize| buf.get(at..at + len).filter(|_| at + len <= n);
    let kind = field(4, 2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes);
    let code = field(16, 4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes);
    match (kind, code) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (Some(NLMSG_ERROR), Some(errno)) => {
            Err(std::io::Error::from_raw_os_error(errno.saturating_neg()).into())
        }
        _ => anyhow::bail!("unexpected rtnetlink reply ({n} bytes)"),
    }
}

// ---------------------------------------------------------------------------
// Outside: airlock's side of the hand-over, and the relay.
// ---------------------------------------------------------------------------

/// airlock's end: the Unix socket the helper connects to.
pub struct Bridge {
    listener: UnixListener,
}

impl Bridge {
    /// Binds `socket` (inside airlock's private 0700 run directory).
    ///
    /// # Errors
    /// The path cannot be bound (too long for a Unix socket, not writable).
    pub fn bind(socket: &Path) -> anyhow::Result<Self> {
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("cannot bind the isolation socket {}", socket.display()))?;
        Ok(Self { listener })
    }

    /// Takes the helper's inner listener and relays every connection made to
    /// it to `target` (the proxy). The task ends when the helper goes away
    /// without handing over; it is aborted when the command exits.
    pub fn serve(self, target: String) -> JoinHandle<()> {
        tokio::spawn(async move {
            let inner = match self.take_listener().await {
                Ok(l) => l,
                Err(e) => {
                    // The helper sees the socket close and refuses to start the command.
                    tracing::warn!(error = %format!("{e:#}"), "isolation hand-over failed");
                    return;
                }
            };
            relay(inner, target).await;
        })
    }

    async fn take_listener(self) -> anyhow::Result<TcpListener> {
        let (stream, _) = self.listener.accept().await?;
        drop(self.listener);
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
        stream.set_write_timeout(Some(HANDOVER_TIMEOUT))?;
        let (fd, mut stream) = tokio::task::spawn_blocking(move || {
            let fd = receive_fd(&stream);
            (fd, stream)
        })
        .await?;
        let fd = fd?;
        let std_listener = StdTcpListener::from(fd);
        std_listener.set_nonblocking(true)?;
        let inner = TcpListener::from_std(std_listener)?;
        tracing::debug!(addr = ?inner.local_addr().ok(), "holding the in-namespace proxy port");
        tokio::task::spawn_blocking(move || stream.write_all(&[ACK])).await??;
        Ok(inner)
    }
}

fn receive_fd(stream: &StdUnixStream) -> anyhow::Result<OwnedFd> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .context("no listener from the isolation helper")?;
    let mut fd = None;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            // Any further fds are dropped (closed) with the iterator.
            if fd.is_none() {
                fd = fds.next();
            }
        }
    }
    match fd {
        Some(fd) if got.bytes == 1 => Ok(fd),
        _ => anyhow::bail!("the isolation helper sent no listener"),
    }
}

async fn relay(inner: TcpListener, target: String) {
    loop {
        let (mut client, _) = match inner.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept inside the namespace failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let target = target.clone();
        tokio::spawn(async move {
            let mut upstream = match TcpStream::connect(&target).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, %target, "cannot reach the proxy from the isolation bridge");
                    return;
                }
            };
            let _nodelay = client.set_nodelay(true);
            let _nodelay = upstream.set_nodelay(true);
            let _done = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}
