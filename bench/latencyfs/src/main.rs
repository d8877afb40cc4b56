//! `latencyfs SOURCE MOUNTPOINT`: mounts a view of SOURCE at MOUNTPOINT in which every
//! metadata operation (lookup, getattr, readlink, open, opendir, readdir, statfs) takes
//! `--delay-us` microseconds, the way each one is a network round trip on NFS. Data reads
//! are not delayed. The view is read-only unless `--writable`, which lets callers change
//! the tree through it; the changes (create, mknod, mkdir, symlink, link, unlink, rmdir,
//! rename, setattr, fsync, fallocate, and the flush of a written file) are delayed too, and
//! data writes are not.
//!
//! A bench helper for `bench/sync.sh`, run as root (it mounts through `/dev/fuse` itself,
//! no fusermount or libfuse needed). It stays in the foreground until the file system is
//! unmounted (`umount MOUNTPOINT`) or it gets SIGINT, SIGTERM or SIGHUP, which unmount it;
//! then it prints how many requests of each kind it served, and how many were delayed, and
//! exits 0.

mod inode_table;
mod latency;
mod op_counts;
mod open_file;
mod passthrough;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fuser::{Config, MountOption, Session, SessionACL};

use latency::Latency;
use passthrough::{CacheTimeouts, Passthrough, Settings};

/// Mounts a passthrough of SOURCE at MOUNTPOINT that delays metadata operations.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The directory to show.
    source: PathBuf,
    /// Where to mount it (an existing directory).
    mountpoint: PathBuf,
    /// Microseconds each metadata operation takes (0: no delay, FUSE's own cost only).
    #[arg(long, default_value_t = 300)]
    delay_us: u64,
    /// Threads serving requests, each on its own cloned /dev/fuse fd. Requests beyond this
    /// many at once wait in the kernel's queue.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// Seconds the kernel may cache an entry and the attributes of a file or symlink
    /// (NFS's acregmin is 3).
    #[arg(long, default_value_t = 3.0)]
    file_ttl: f64,
    /// Seconds the kernel may cache an entry and the attributes of a directory (NFS's
    /// acdirmin is 30).
    #[arg(long, default_value_t = 30.0)]
    dir_ttl: f64,
    /// Answer directory listings with attributes (READDIRPLUS), saving a lookup per entry
    /// for callers that stat what they list, as NFS does when it is enabled.
    #[arg(long)]
    readdirplus: bool,
    /// Let callers create, write, rename and remove files and change their attributes
    /// through the mount (the destination of a copy); it is read-only otherwise.
    #[arg(long)]
    writable: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("latencyfs: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args) -> Result<(), String> {
    if args.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    let timeouts = CacheTimeouts {
        file: seconds(args.file_ttl, "--file-ttl")?,
        dir: seconds(args.dir_ttl, "--dir-ttl")?,
    };
    // The default 50 µs of slack would add itself to every delay. The request threads
    // inherit this thread's slack, as they are spawned after this.
    // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only this thread's timers.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let latency = Latency::calibrate(Duration::from_micros(args.delay_us));
    if args.writable {
        // The kernel sends the modes of new entries with the caller's umask applied; ours
        // would clear more bits.
        // SAFETY: umask takes a mode and cannot fail.
        unsafe { libc::umask(0) };
    }
    let signals = block_termination_signals();

    let settings = Settings {
        latency,
        timeouts,
        readdirplus: args.readdirplus,
        writable: args.writable,
    };
    let passthrough = Passthrough::new(&args.source, settings)
        .map_err(|error| format!("{}: {error}", args.source.display()))?;
    let counts = passthrough.counts();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("latencyfs:{}", args.source.display())),
        MountOption::Subtype("latencyfs".into()),
        MountOption::DefaultPermissions,
    ];
    if !args.writable {
        config.mount_options.push(MountOption::RO);
    }
    config.acl = SessionACL::All;
    config.n_threads = Some(args.threads);
    config.clone_fd = true;
    let mut session = Session::new(passthrough, &args.mountpoint, &config)
        .map_err(|error| format!("cannot mount on {}: {error}", args.mountpoint.display()))?;

    let mut unmounter = session.unmount_callable();
    let mountpoint = args.mountpoint.clone();
    std::thread::spawn(move || {
        wait_for(&signals);
        if let Err(error) = unmounter.unmount() {
            eprintln!(
                "latencyfs: cannot unmount {}: {error}",
                mountpoint.display()
            );
        }
    });

    println!(
        "latencyfs: {} on {}: {} µs per metadata operation (a sleep overshoots by {} µs here; a \
         calibrated wait takes {} µs), {} threads, cache {} s (files) {} s (directories){}{}",
        args.source.display(),
        args.mountpoint.display(),
        latency.target.as_micros(),
        latency.overshoot.as_micros(),
        latency.measured().as_micros(),
        args.threads,
        args.file_ttl,
        args.dir_ttl,
        if args.readdirplus {
            ", readdirplus"
        } else {
            ""
        },
        if args.writable { ", writable" } else { "" }
    );
    // The caller may be waiting for this line in a pipe.
    let _ = std::io::stdout().flush();

    let result = session.run();
    println!("latencyfs: unmounted; served {counts}");
    result.map_err(|error| format!("the session failed: {error}"))
}

fn seconds(value: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|error| format!("{flag} {value}: {error}"))
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread it spawns afterwards,
/// so that only [`wait_for`] sees them.
fn block_termination_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initializes the set before sigaddset and pthread_sigmask read it;
    // blocking signals in this thread has no other effect.
    unsafe {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::zeroed();
        libc::sigemptyset(set.as_mut_ptr());
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(set.as_mut_ptr(), signal);
        }
        let set = set.assume_init();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Returns when one of the blocked `signals` arrives.
fn wait_for(signals: &libc::sigset_t) {
    let mut signal = 0;
    // SAFETY: `signals` is an initialized set and `signal` a valid place for the answer.
    unsafe { libc::sigwait(signals, &mut signal) };
}
