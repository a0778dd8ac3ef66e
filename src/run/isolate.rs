//! Isolation (the default of `airlock run`): the command runs in its own
//! user, network, mount and PID namespaces, without capabilities, where the
//! only way out is airlock and nothing airlock holds is within reach.
//!
//! Three processes take part besides airlock, and no thread of the tokio
//! runtime ever changes namespace:
//!
//! 1. **airlock run** (outside, non-dumpable) binds a Unix socket in its
//!    private run directory and spawns a fresh copy of itself
//!    (`/proc/self/exe run --netns-helper SOCKET --netns-port PORT
//!    --hide=FILE... -- CMD...`) with the command's environment.
//! 2. **The helper** is single-threaded when it starts, so `unshare` applies
//!    to the whole process. It creates user, network, mount and PID
//!    namespaces at once (its uid and gid mapped to themselves; as root,
//!    where user namespaces are unavailable, the same without one), brings
//!    `lo` up over rtnetlink, binds `127.0.0.1:PORT` *inside*, and hands that
//!    listening socket to airlock over the Unix socket (`SCM_RIGHTS`; a
//!    filesystem Unix socket is reachable across network namespaces). It
//!    then makes every mount private and mounts an empty, read-only,
//!    mode-000 file from a small tmpfs over each `--hide` file (the secret
//!    files of the config: CA key, secrets file, Vault token and AppRole
//!    files, admin and decider tokens), and starts the second stage. It
//!    stays outside the new PID namespace, waiting and forwarding signals,
//!    and watching the files' directories (inotify) to hide again a file
//!    replaced by rename. (After `unshare(CLONE_NEWPID)` it can start no
//!    thread: all of this runs on a current-thread runtime.)
//! 3. **The init** (`run --isolate-init`) is PID 1 of the new PID namespace:
//!    it mounts a fresh `/proc` (only the namespace's processes; airlock's
//!    is not there), empties every capability set (bounding, ambient,
//!    effective, permitted, inheritable), sets `no_new_privs`, and starts
//!    the command as PID 2, forwarding signals (PID 1 receives only the
//!    signals it handles), reaping orphans, and exiting with its status; the
//!    kernel then kills whatever the command left in the namespace.
//!
//! airlock accepts connections on the inner listener (a socket keeps the
//! namespace it was created in, whoever calls `accept`) and relays each one
//! to the proxy port.
//!
//! Inside, `lo` is the only interface and there is no default route: a
//! connection to any non-loopback address fails at once with "Network is
//! unreachable", a loopback address is the namespace's own (nothing listens
//! there but the bridged proxy port: "Connection refused"), and no resolver
//! is reachable, so DNS fails too. A tool that ignores the proxy variables
//! gets an error, never a bypass, and nothing is redirected.
//!
//! Without capabilities, the command (even as uid 0) cannot unmount what
//! hides the files, change its namespaces' network or mounts, or gain
//! privileges through setuid or file-capability programs. A user namespace
//! it creates itself gets capabilities only there, and the mounts it
//! inherits are locked together, so the hiding cannot be undone from one.
//! With a user namespace, capabilities are meaningful only over the new
//! namespaces in any case, never over airlock's.
//!
//! What it does not isolate: the rest of the filesystem. Unix sockets bound
//! to paths (a Docker socket, an ssh-agent, D-Bus) stay reachable, and a
//! secret file reachable under a second path (a hard link, another mount
//! of its directory) is not hidden. Abstract Unix sockets are per network
//! namespace and are cut off.
//!
//! Requirements: Linux, and either user namespaces (`user.max_user_namespaces
//! > 0`, `kernel.unprivileged_userns_clone = 1` where that sysctl exists,
//! and on Ubuntu 24.04+ `kernel.apparmor_restrict_unprivileged_userns = 0`
//! or an AppArmor profile allowing it) or root with CAP_SYS_ADMIN; and a
//! `/proc` that may be mounted again. Without them airlock refuses to run
//! the command (125) and names `--no-isolate`.

use std::io::{IoSlice, IoSliceMut, Read as _, Write as _};
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, TcpListener as StdTcpListener};
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
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

/// The helper's whole life: enter new user, network, mount and PID
/// namespaces, bring `lo` up, bind the inner proxy port and hand it to
/// airlock, hide `hide`, then start the second stage (PID 1 of the new PID
/// namespace, which starts `command`) and wait for it, forwarding signals.
/// Returns the command's status: 125 when anything before it fails.
pub fn helper(socket: &Path, port: u16, hide: &[PathBuf], command: &[String]) -> ExitCode {
    if let Err(e) = die_with_parent() {
        eprintln!("airlock run: {e:#}");
        return ExitCode::from(super::EXIT_SETUP);
    }
    // Keeps the files hidden while the command runs.
    let keep_hidden = match prepare(socket, port, hide) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("airlock run: {e:#}");
            eprintln!(
                "airlock run: the command was not started (it never runs unisolated; \
                 --no-isolate runs it without isolation)"
            );
            return ExitCode::from(super::EXIT_SETUP);
        }
    };
    if let Err(e) = pass_capabilities_to_init() {
        eprintln!("airlock run: {e:#}");
        return ExitCode::from(super::EXIT_SETUP);
    }
    let mut init = tokio::process::Command::new("/proc/self/exe");
    init.args(["run", "--isolate-init", "--"]).args(command);
    super::supervise_blocking(init, keep_hidden, |e| {
        eprintln!("airlock run: cannot start the isolation init: {e}");
        ExitCode::from(super::EXIT_SETUP)
    })
}

/// `SIGKILL` when the parent goes: if airlock dies, the helper dies; when
/// the helper dies, so does the init, and with PID 1 the kernel kills the
/// whole namespace. Without it the command would live on, cut off.
fn die_with_parent() -> anyhow::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .context("cannot set PR_SET_PDEATHSIG")
}

/// The second stage, PID 1 of the command's PID namespace: mount a `/proc`
/// that shows only this namespace, give up every capability, then start
/// `command` and wait for it, forwarding signals (PID 1 gets only the
/// signals it handles). When it exits, the namespace and whatever the
/// command left running in it go away.
pub fn init(command: &[String]) -> ExitCode {
    if let Err(e) = die_with_parent().and_then(|()| enter_init()) {
        eprintln!("airlock run: {e:#}");
        eprintln!(
            "airlock run: the command was not started (it never runs unisolated; \
             --no-isolate runs it without isolation)"
        );
        return ExitCode::from(super::EXIT_SETUP);
    }
    let Some((program, args)) = command.split_first() else {
        eprintln!("airlock run: no command given");
        return ExitCode::from(super::EXIT_SETUP);
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    super::supervise_blocking(cmd, None::<std::future::Ready<()>>, |e| {
        super::report_spawn_error(program, e)
    })
}

/// PID 1 inherits every orphan of its namespace, and an orphan that exits
/// stays a zombie until PID 1 reaps it. On each `SIGCHLD`, reaps the
/// exited children other than `command` (which tokio waits for).
pub async fn reap_orphans(command: u32) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut sigchld) = signal(SignalKind::child()) else {
        tracing::warn!("cannot watch SIGCHLD: orphans of the command stay zombies until it exits");
        return;
    };
    while sigchld.recv().await.is_some() {
        for pid in exited_children(command) {
            let _reaped = rustix::process::waitpid(
                rustix::process::Pid::from_raw(pid),
                rustix::process::WaitOptions::NOHANG,
            );
        }
    }
}

/// Zombie children of this process except `command`, from `/proc`.
fn exited_children(command: u32) -> Vec<i32> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != command)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // `pid (comm) state ppid ...`: comm may hold anything but `)`
                // ends it last.
                let mut f = stat
                    .rsplit_once(')')
                    .map(|(_, rest)| rest.split_ascii_whitespace())
                    .into_iter()
                    .flatten();
                f.next() == Some("Z") && f.next() == Some(me.as_str())
            })
        })
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

fn enter_init() -> anyhow::Result<()> {
    use rustix::mount::MountFlags;
    // Only ever as PID 1 of a namespace the helper made: never over the
    // host's /proc, whoever runs this hidden stage by hand.
    if std::process::id() != 1 {
        anyhow::bail!(
            "--isolate-init is internal: it runs only as PID 1 of the command's namespace"
        );
    }
    rustix::mount::mount(
        "proc",
        "/proc",
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .context("cannot mount /proc for the command's PID namespace")?;
    drop_capabilities()
}

/// Empties every capability set (bounding, ambient, effective, permitted,
/// inheritable) and sets `PR_SET_NO_NEW_PRIVS`: the command, even as uid 0,
/// can then not unmount what hides airlock's files, leave its namespaces,
/// or gain privileges through a setuid or file-capability program.
/// Checked afterwards; any failure refuses the command.
fn drop_capabilities() -> anyhow::Result<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    for bit in 0..u64::BITS {
        let cap = CapabilitySet::from_bits_retain(1 << bit);
        // EINVAL: past the kernel's last capability.
        if rustix::thread::capability_is_in_bounding_set(cap).unwrap_or(false) {
            rustix::thread::remove_capability_from_bounding_set(cap)
                .with_context(|| format!("cannot drop capability {bit} from the bounding set"))?;
        }
    }
    rustix::thread::clear_ambient_capability_set()
        .context("cannot clear the ambient capabilities")?;
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, none).context("cannot drop capabilities")?;
    rustix::thread::set_no_new_privs(true).context("cannot set no_new_privs")?;
    let now = rustix::thread::capabilities(None).context("cannot read capabilities back")?;
    if now != none {
        anyhow::bail!("capabilities remain after dropping them: {now:?}");
    }
    Ok(())
}

/// The init needs `CAP_SYS_ADMIN` (to mount `/proc`) and `CAP_SETPCAP` (to
/// empty its bounding set) in the new user namespace; a non-root uid loses
/// them at `exec` unless they are ambient. The init drops them all again.
fn pass_capabilities_to_init() -> anyhow::Result<()> {
    use rustix::thread::CapabilitySet;
    let keep = CapabilitySet::SYS_ADMIN | CapabilitySet::SETPCAP;
    let mut sets = rustix::thread::capabilities(None).context("cannot read capabilities")?;
    sets.inheritable |= keep & sets.permitted;
    rustix::thread::set_capabilities(None, sets).context("cannot set inheritable capabilities")?;
    for cap in [CapabilitySet::SYS_ADMIN, CapabilitySet::SETPCAP] {
        if sets.permitted.contains(cap) {
            rustix::thread::configure_capability_in_ambient_set(cap, true)
                .context("cannot pass capabilities to the isolation init")?;
        }
    }
    Ok(())
}

fn prepare(
    socket: &Path,
    port: u16,
    hide: &[PathBuf],
) -> anyhow::Result<Option<impl Future<Output = ()> + Send + 'static + use<>>> {
    enter_namespaces()?;
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
    let scratch = socket
        .parent()
        .map(|d| d.join("hide"))
        .context("the isolation socket has no directory")?;
    hide_files(hide, &scratch)
}

/// The secret files hidden from the command, kept hidden while it runs.
struct Hiding {
    /// Each hidden path and the empty placeholder mounted over it.
    files: Vec<(PathBuf, PathBuf)>,
    /// `(st_dev, st_ino)` of the placeholders: a path showing one is hidden.
    placeholders: [(u64, u64); 2],
}

impl Hiding {
    /// Mounts the placeholder over every path that does not show one (yet
    /// again, after the file was replaced). Returns the paths it (re)hid,
    /// and the first failure after trying every path.
    fn enforce(&self) -> (Vec<&Path>, Option<anyhow::Error>) {
        use std::os::unix::fs::MetadataExt as _;
        let mut hid = Vec::new();
        let mut failed = None;
        for (path, placeholder) in &self.files {
            let done = match std::fs::metadata(path) {
                Ok(m) if self.placeholders.contains(&(m.dev(), m.ino())) => Ok(()),
                Ok(_) => rustix::mount::mount_bind(placeholder, path)
                    .map(|()| hid.push(path.as_path()))
                    .map_err(std::io::Error::from),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                failed.get_or_insert(
                    anyhow::Error::from(e).context(format!("cannot hide {}", path.display())),
                );
            }
        }
        (hid, failed)
    }
}

/// Makes every mount private (nothing done here propagates back to
/// airlock's namespace), then mounts an empty, read-only, mode-000 file over
/// each of `files` that exists (such a directory over a directory). The
/// placeholders live on a small read-only tmpfs mounted at `scratch`.
///
/// A file replaced by rename while the command runs (a rotated token, an
/// editor's save) is a new directory entry, and the kernel drops the mount
/// that sat on the old one: a watcher sees every new entry in the
/// files' directories (inotify, a thread of the helper) and hides such a
/// file again at once, saying so on stderr. In between, for the time that
/// takes, the new file is readable.
fn hide_files(
    files: &[PathBuf],
    scratch: &Path,
) -> anyhow::Result<Option<impl Future<Output = ()> + Send + 'static + use<>>> {
    use rustix::mount::{MountFlags, MountPropagationFlags};
    use std::os::unix::fs::MetadataExt as _;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .context("cannot make the command's mounts private")?;
    if files.is_empty() {
        return Ok(None);
    }
    std::fs::create_dir(scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    rustix::mount::mount("tmpfs", scratch, "tmpfs", flags, c"size=4k,mode=0555")
        .context("cannot mount a tmpfs for the hiding files")?;
    let empty_file = scratch.join("empty");
    let empty_dir = scratch.join("dir");
    // Mode 000 on a read-only mount: opening them fails (EACCES) for the
    // command, which has no capability to override it, not even as root.
    {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&empty_file)
            .context("cannot create the empty file")?;
        std::fs::DirBuilder::new()
            .mode(0o000)
            .create(&empty_dir)
            .context("cannot create the empty directory")?;
    }
    rustix::mount::mount_remount(scratch, flags | MountFlags::RDONLY, "")
        .context("cannot make the hiding tmpfs read-only")?;
    let id = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    let placeholders = [
        id(&empty_file).context("cannot stat the empty file")?,
        id(&empty_dir).context("cannot stat the empty directory")?,
    ];
    let mut hidden = Vec::new();
    for path in files {
        let placeholder = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => empty_dir.clone(),
            Ok(_) => empty_file.clone(),
            // Not there now: hidden if it appears while the command runs.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => empty_file.clone(),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot hide {}", path.display()));
            }
        };
        hidden.push((path.clone(), placeholder));
    }
    let hiding = std::sync::Arc::new(Hiding {
        files: hidden,
        placeholders,
    });
    // inotify on the files' directories: a new entry (created or renamed
    // there) may be a replacement. Watching starts before the check below,
    // so no replacement in between is missed.
    use rustix::fs::inotify;
    let watch = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
        .context("cannot start inotify")?;
    let mut dirs: Vec<&Path> = hiding
        .files
        .iter()
        .filter_map(|(p, _)| p.parent())
        .collect();
    dirs.sort_unstable();
    dirs.dedup();
    // A directory that does not exist holds nothing to hide.
    for dir in dirs.into_iter().filter(|d| d.is_dir()) {
        inotify::add_watch(
            &watch,
            dir,
            inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_TO,
        )
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    }
    if let (_, Some(e)) = hiding.enforce() {
        return Err(e);
    }
    Ok(Some(keep_hidden(watch, hiding)))
}

#[expect(
    deprecated,
    reason = "tokio deprecates the safe constructor because a borrowed fd could be closed while \
              registered; here the AsyncFd owns the OwnedFd, and the replacement is `unsafe`, \
              which the crate forbids"
)]
fn async_fd(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)
}

/// Hides a replaced file again on every new entry in a watched directory,
/// for as long as the helper runs (the command's lifetime). A future on
/// the helper's runtime: after `unshare(CLONE_NEWPID)` this process can
/// start no thread.
async fn keep_hidden(watch: OwnedFd, hiding: std::sync::Arc<Hiding>) {
    use rustix::io::Errno;
    let lost = |e: &dyn std::fmt::Display| {
        eprintln!(
            "airlock run: cannot watch the hidden files any more ({e}): a secret file \
             replaced from now on would be readable by the command"
        );
    };
    let watch = match async_fd(watch) {
        Ok(w) => w,
        Err(e) => return lost(&e),
    };
    let mut buf = [MaybeUninit::uninit(); 4096];
    loop {
        let mut ready = match watch.readable().await {
            Ok(r) => r,
            Err(e) => return lost(&e),
        };
        let mut changed = false;
        loop {
            // Each read takes a batch; one event is enough to say "look again".
            match rustix::fs::inotify::Reader::new(watch.get_ref(), &mut buf).next() {
                Ok(_) => changed = true,
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => {}
                Err(e) => return lost(&e),
            }
        }
        ready.clear_ready();
        if !changed {
            continue;
        }
        let (hid, failed) = hiding.enforce();
        for path in hid {
            eprintln!(
                "airlock run: {} was replaced while the command ran; hidden again",
                path.display()
            );
        }
        if let Some(e) = failed {
            eprintln!("airlock run: {e:#}");
        }
    }
}

/// `unshare` of new user, network, mount and PID namespaces, with this
/// process's uid and gid mapped to themselves. As root, where user
/// namespaces are not available, the same without the user namespace (the
/// command loses every capability in [`init`] either way).
fn enter_namespaces() -> anyhow::Result<()> {
    use rustix::thread::UnshareFlags;
    let euid = rustix::process::geteuid();
    let egid = rustix::process::getegid();
    let rest = UnshareFlags::NEWNET | UnshareFlags::NEWNS | UnshareFlags::NEWPID;
    let mut tried = Vec::new();
    match unshare(UnshareFlags::NEWUSER | rest) {
        Ok(()) => {}
        Err(e) => {
            tried.push(format!(
                "unshare(CLONE_NEWUSER|CLONE_NEWNET|CLONE_NEWNS|CLONE_NEWPID): {}",
                explain(e, true)
            ));
            if !euid.is_root() {
                return Err(namespace_error(&tried));
            }
            return match unshare(rest) {
                Ok(()) => Ok(()),
                Err(e) => {
                    tried.push(format!(
                        "unshare(CLONE_NEWNET|CLONE_NEWNS|CLONE_NEWPID) as root: {}",
                        explain(e, false)
                    ));
                    Err(namespace_error(&tried))
                }
            };
        }
    }
    // Map our own uid/gid to themselves: the command keeps its identity, and
    // this process holds capabilities over the namespaces it just made (none
    // over airlock's) until the second stage drops them all.
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
        "cannot create the command's namespaces (user, network, mount, PID): {}. Isolation needs \
         user namespaces, or root with CAP_SYS_ADMIN (here: euid {}, kernel.unprivileged_userns_clone = {}, \
         user.max_user_namespaces = {}, kernel.apparmor_restrict_unprivileged_userns = {}). Enable them \
         (e.g. sysctl -w user.max_user_namespaces=10000 kernel.unprivileged_userns_clone=1), or pass \
         --no-isolate to run the command without isolation",
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
