//! The only module that touches libpcap: opens a capture (file, stdin or
//! live interface) and hands out raw frames with their timestamps.
//! Everything downstream works on bytes and records.

use crate::decode::LinkType;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where packets come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// A pcap or pcapng file; `-` reads standard input.
    File(PathBuf),
    /// A live interface.
    Live(LiveOptions),
}

/// Settings of a live capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveOptions {
    /// Interface name.
    pub interface: String,
    /// BPF filter expression (empty: none).
    pub bpf: String,
    /// Bytes kept per packet. Headers are all the sensor needs.
    pub snaplen: i32,
    /// Kernel buffer size in MiB.
    pub buffer_mib: i32,
    /// Read timeout, so that windows close on time on a quiet link.
    pub timeout_ms: i32,
}

/// Why a capture could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The capture file could not be opened or is not a capture.
    #[error("cannot read capture '{path}': {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// libpcap's message.
        msg: String,
    },
    /// No such interface.
    #[error("no such interface '{0}' (see `ip link` for the names here)")]
    NoInterface(String),
    /// Capturing needs a privilege this process lacks.
    #[error("not permitted to capture on '{0}': run as root, or grant the binary CAP_NET_RAW (setcap cap_net_raw,cap_net_admin=eip $(which darkscope-sensor))")]
    Permission(String),
    /// The BPF expression does not compile.
    #[error("bad BPF filter '{expr}': {msg}")]
    Bpf {
        /// The expression.
        expr: String,
        /// libpcap's message.
        msg: String,
    },
    /// Any other libpcap error.
    #[error("libpcap: {0}")]
    Pcap(String),
}

/// One read from the capture.
pub enum Next<'a> {
    /// A frame: timestamp (µs since epoch), original length, captured bytes.
    Frame(u64, u32, &'a [u8]),
    /// Live read timeout: nothing arrived.
    Timeout,
    /// End of file.
    End,
}

/// Cumulative libpcap statistics (live only). libpcap's counters are `u32`
/// and wrap; callers take deltas with `wrapping_sub`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcapStats {
    /// Packets received by the filter.
    pub received: u32,
    /// Dropped by the kernel (buffer full).
    pub dropped: u32,
    /// Dropped by the interface or driver.
    pub if_dropped: u32,
}

enum Inner {
    Offline(pcap::Capture<pcap::Offline>),
    Live(pcap::Capture<pcap::Active>),
}

/// An open capture.
pub struct Capture {
    inner: Inner,
    link: LinkType,
    /// Size of the input file, for progress (0 if unknown).
    file_size: u64,
    /// Live only: how long one read waits for a packet.
    wait: Duration,
    /// Live only: a duplicate of the capture socket to poll(2) on.
    poll_fd: Option<OwnedFd>,
}

fn file_error(path: &Path, e: pcap::Error) -> CaptureError {
    CaptureError::File {
        path: path.to_path_buf(),
        msg: libpcap_msg(e),
    }
}

/// libpcap's own message (the `pcap` crate's "libpcap error: " prefix
/// dropped: our messages already say where it comes from), with a way out
/// where libpcap's message leaves the user guessing.
fn libpcap_msg(e: pcap::Error) -> String {
    let msg = match e {
        pcap::Error::PcapError(m) => m,
        e => e.to_string(),
    };
    if msg.contains("different from the type of the first interface") {
        format!(
            "{msg} (libpcap reads a pcapng file only when all its \
             interfaces share one link type: capture each interface to a \
             file of its own)"
        )
    } else {
        msg
    }
}

impl Capture {
    /// Opens `spec`.
    pub fn open(spec: &SourceSpec) -> Result<Capture, CaptureError> {
        match spec {
            SourceSpec::File(path) => {
                // libpcap reads standard input for "-".
                let cap = pcap::Capture::from_file(path).map_err(|e| file_error(path, e))?;
                let file_size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                let link = LinkType::from_dlt(cap.get_datalink().0);
                Ok(Capture {
                    inner: Inner::Offline(cap),
                    link,
                    file_size,
                    wait: Duration::ZERO,
                    poll_fd: None,
                })
            }
            SourceSpec::Live(o) => Self::open_live(o),
        }
    }

    fn open_live(o: &LiveOptions) -> Result<Capture, CaptureError> {
        let exists = pcap::Device::list()
            .map(|l| l.iter().any(|d| d.name == o.interface))
            .unwrap_or(true);
        if !exists {
            return Err(CaptureError::NoInterface(o.interface.clone()));
        }
        let inactive = pcap::Capture::from_device(o.interface.as_str())
            .map_err(|e| CaptureError::Pcap(libpcap_msg(e)))?
            .promisc(true)
            .immediate_mode(true)
            .snaplen(o.snaplen)
            .buffer_size(o.buffer_mib.saturating_mul(1 << 20))
            .timeout(o.timeout_ms);
        let mut cap = inactive.open().map_err(|e| {
            let msg = libpcap_msg(e);
            if msg.contains("ermission") || msg.contains("not permitted") {
                CaptureError::Permission(o.interface.clone())
            } else if msg.contains("No such device") || msg.contains("doesn't exist") {
                CaptureError::NoInterface(o.interface.clone())
            } else {
                CaptureError::Pcap(msg)
            }
        })?;
        if !o.bpf.trim().is_empty() {
            cap.filter(&o.bpf, true).map_err(|e| CaptureError::Bpf {
                expr: o.bpf.clone(),
                msg: libpcap_msg(e),
            })?;
        }
        let link = LinkType::from_dlt(cap.get_datalink().0);
        // libpcap's read timeout does not make a read return on a quiet link
        // (on Linux its timer starts with the first packet), and breaking the
        // read from another thread can lose the packet being read. So: a
        // non-blocking handle, and poll(2) with our own timeout.
        let cap = cap
            .setnonblock()
            .map_err(|e| CaptureError::Pcap(libpcap_msg(e)))?;
        let poll_fd = cap
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| CaptureError::Pcap(format!("dup capture fd: {e}")))?;
        Ok(Capture {
            inner: Inner::Live(cap),
            link,
            file_size: 0,
            wait: Duration::from_millis(o.timeout_ms.max(1) as u64),
            poll_fd: Some(poll_fd),
        })
    }

    /// Link type of the frames.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// True for a live capture.
    pub fn is_live(&self) -> bool {
        matches!(self.inner, Inner::Live(_))
    }

    /// Size of the input file in bytes (0 for live captures and stdin).
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Reads the next frame.
    pub fn read_next(&mut self) -> Result<Next<'_>, CaptureError> {
        let r = match &mut self.inner {
            Inner::Offline(c) => c.next_packet(),
            Inner::Live(c) => c.next_packet(),
        };
        match r {
            Ok(p) => {
                #[allow(clippy::unnecessary_cast)] // time_t and suseconds_t widths vary by platform
                let ts = p.header.ts.tv_sec as i64 * 1_000_000 + p.header.ts.tv_usec as i64;
                Ok(Next::Frame(ts.max(0) as u64, p.header.len, p.data))
            }
            Err(pcap::Error::NoMorePackets) => Ok(Next::End),
            Err(pcap::Error::TimeoutExpired) => {
                // Non-blocking live read found nothing: wait for the socket, at most `wait`.
                if let Some(fd) = &self.poll_fd {
                    let ms = self.wait.as_millis().min(u16::MAX as u128) as u16;
                    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut fds, PollTimeout::from(ms)) {
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => return Err(CaptureError::Pcap(format!("poll: {e}"))),
                    }
                }
                Ok(Next::Timeout)
            }
            Err(e) => Err(CaptureError::Pcap(libpcap_msg(e))),
        }
    }

    /// libpcap's counters (live captures only).
    pub fn stats(&mut self) -> Option<PcapStats> {
        match &mut self.inner {
            Inner::Live(c) => c.stats().ok().map(|s| PcapStats {
                received: s.received,
                dropped: s.dropped,
                if_dropped: s.if_dropped,
            }),
            Inner::Offline(_) => None,
        }
    }
}
