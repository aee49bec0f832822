//! Listeners, runtime threads and stopping: everything between
//! [`start`] and [`SinkHandle::stop`].
//!
//! [`start`] binds one listening socket per thread on the same address
//! (`SO_REUSEPORT` when there are several), then starts the threads, each
//! running a tokio-uring runtime whose accept loop spawns one task per
//! connection (see `conn`).
//!
//! Stopping must wake an accept and reads that are in flight in io_uring,
//! which have no timeout. It uses `shutdown(2)`: on the listening sockets,
//! which makes their pending accepts fail (the sink keeps the original
//! sockets open until it is dropped, so the fds cannot be reused by then),
//! and then, from each runtime thread, on every connection it still has,
//! which ends their reads. Each thread waits for its connection tasks to
//! finish before it exits, so that [`SinkHandle::stop`] returns only once
//! nothing of the sink is running.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::time::sleep;
use tokio_uring::net::{TcpListener, TcpStream};

use super::faults::{Dice, Faults, Verdict};
use super::record::Recorder;
use super::session::{Limits, Profile};
use super::stats::{bump, Counters, SinkStats};
use super::{conn, ReceivedMessage, SinkConfig};

/// Pending-connection queue per listener.
const LISTEN_BACKLOG: i32 = 1024;

/// Pause after an accept error (e.g. out of file descriptors), so that a
/// persistent one does not spin the thread.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Everything the threads of one sink share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub profile: Arc<Profile>,
    pub faults: Faults,
    pub exit_after: Option<u64>,
    pub started: Instant,
    /// One block per thread, indexed by thread number.
    pub counters: Box<[Counters]>,
    pub recorder: Recorder,
    /// Messages accepted sink-wide: numbers them and enforces `exit_after`.
    accepted: AtomicU64,
    /// Messages that reached their end of data, for `tempfail_data_first`.
    data_ends: AtomicU64,
    /// Connections accepted sink-wide; numbers their dice.
    next_connection: AtomicU64,
    /// Connections open now, and the most ever open at once.
    open: AtomicU64,
    peak: AtomicU64,
    stop: Stop,
}

/// A connection counted as open ([`Shared::open_connection`]).
pub(crate) struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The stop request and what it must wake.
#[derive(Debug)]
struct Stop {
    /// Cheap check for the hot paths.
    requested: AtomicBool,
    /// The same fact for [`SinkHandle::wait`] to sleep on.
    done: Mutex<bool>,
    cv: Condvar,
    /// The listening sockets, kept open for the sink's whole life.
    listeners: Vec<std::net::TcpListener>,
}

impl Shared {
    /// Numbers the next accepted message, or `None` once `exit_after`
    /// messages have been accepted.
    pub fn claim(&self) -> Option<u64> {
        match self.exit_after {
            None => Some(self.accepted.fetch_add(1, Ordering::Relaxed) + 1),
            Some(limit) => self
                .accepted
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                    (m < limit).then_some(m + 1)
                })
                .ok()
                .map(|m| m + 1),
        }
    }

    /// The fate of a complete message: first the `tempfail_data_first`
    /// rule, then the dice.
    pub fn data_verdict(&self, dice: &mut Dice) -> Verdict {
        let first = self.faults.tempfail_data_first;
        // The load keeps the shared counter out of the hot path once the
        // first N are through.
        if first > 0
            && self.data_ends.load(Ordering::Relaxed) < first
            && self.data_ends.fetch_add(1, Ordering::Relaxed) < first
        {
            return Verdict::Tempfail;
        }
        dice.judge(self.faults.tempfail_data_pct, self.faults.permfail_data_pct)
    }

    /// The dice of a newly accepted connection.
    pub fn connection_dice(&self) -> Dice {
        let n = self.next_connection.fetch_add(1, Ordering::Relaxed);
        Dice::new(self.faults.seed, n)
    }

    /// Nanoseconds since the sink started, for the first/last message times.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn stopping(&self) -> bool {
        self.stop.requested.load(Ordering::Acquire)
    }

    /// Asks every thread to stop; idempotent, callable from any thread.
    pub fn request_stop(&self) {
        if self.stop.requested.swap(true, Ordering::AcqRel) {
            return;
        }
        for l in &self.stop.listeners {
            // SAFETY: plain syscall on an fd this struct keeps open. A
            // listening socket that is shut down fails its pending and
            // future accepts, which is what wakes the accept loops.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
        }
        *self.stop.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop.cv.notify_all();
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            peak_connections: self.peak.load(Ordering::Relaxed),
            ..SinkStats::sum(&self.counters, self.started.elapsed())
        }
    }

    /// Count a connection open until the guard drops; None when it is one
    /// over `max_connections` (it is not counted then).
    pub fn open_connection(self: &Arc<Self>) -> Option<OpenConnection> {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        let limit = self.faults.max_connections as u64;
        if limit > 0 && open > limit {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.peak.fetch_max(open, Ordering::Relaxed);
        Some(OpenConnection(self.clone()))
    }
}

/// Starts a sink: binds its listeners, opens its files, starts its threads.
/// When it returns `Ok`, the sink accepts connections on
/// [`SinkHandle::addr`].
///
/// Fails (nothing left running) if `threads` is 0, a fault percentage is out
/// of range, the address cannot be bound, the dump directory or id log
/// cannot be created, or io_uring is unavailable.
pub fn start(config: SinkConfig) -> io::Result<SinkHandle> {
    if config.threads == 0 {
        return Err(invalid("threads must be at least 1".into()));
    }
    config.faults.validate().map_err(invalid)?;
    let reuse_port = config.threads > 1;
    let first = bind(config.listen, reuse_port)?;
    // With port 0 the others must join the port the first one got.
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..config.threads {
        listeners.push(bind(addr, true)?);
    }
    let recorder = Recorder::open(
        config.keep_messages,
        config.dump_dir.clone(),
        config.id_log.as_deref(),
    )?;
    let shared = Arc::new(Shared {
        profile: Arc::new(Profile::new(&config.hostname, Limits::default())),
        faults: config.faults.clone(),
        exit_after: config.exit_after,
        started: Instant::now(),
        counters: (0..config.threads).map(|_| Counters::default()).collect(),
        recorder,
        accepted: AtomicU64::new(0),
        data_ends: AtomicU64::new(0),
        next_connection: AtomicU64::new(0),
        open: AtomicU64::new(0),
        peak: AtomicU64::new(0),
        stop: Stop {
            requested: AtomicBool::new(false),
            done: Mutex::new(false),
            cv: Condvar::new(),
            listeners,
        },
    });

    // From here on, an early return drops the handle, which stops and
    // joins whatever threads did start.
    let mut handle = SinkHandle {
        shared,
        addr,
        threads: Vec::with_capacity(config.threads),
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    for index in 0..config.threads {
        let listener = handle.shared.stop.listeners[index].try_clone()?;
        let shared = handle.shared.clone();
        let ready = ready_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sink-{index}"))
            .spawn(move || run_thread(index, listener, shared, ready))?;
        handle.threads.push(thread);
    }
    drop(ready_tx);
    for _ in 0..config.threads {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("a sink thread died while starting")),
        }
    }
    Ok(handle)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// A listening TCP socket on `addr`.
fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Restarting a sink must not wait for the last run's TIME_WAITs.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// A running sink. Dropping it stops it, like [`stop`](Self::stop).
#[derive(Debug)]
pub struct SinkHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl SinkHandle {
    /// The address the sink listens on (with the actual port when the
    /// configuration asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A reader of (messages taken, messages refused) for the progress
    /// line, usable from another thread.
    pub fn progress_reader(&self) -> crate::progress::Reader {
        let shared = self.shared.clone();
        Box::new(move || {
            let stats = shared.stats();
            (stats.messages, stats.tempfails + stats.permfails)
        })
    }

    /// What the sink has done so far, summed over its threads.
    pub fn stats(&self) -> SinkStats {
        self.shared.stats()
    }

    /// The kept messages (see [`SinkConfig::keep_messages`]), in the order
    /// they were accepted.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.recorder.messages()
    }

    /// Waits until at least `n` messages were accepted (and recorded), or
    /// `timeout` passed; true in the first case.
    pub fn wait_for_messages(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let messages: u64 = self
                .shared
                .counters
                .iter()
                .map(|c| c.messages.load(Ordering::Acquire))
                .sum();
            if messages >= n {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Polling keeps the message path free of any notification.
            std::thread::sleep((deadline - now).min(Duration::from_millis(1)));
        }
    }

    /// Blocks until the sink is asked to stop: `exit_after` reached, or a
    /// [`Stopper`] used. Returns at once after that; call
    /// [`stop`](Self::stop) next to wait for the threads and get the stats.
    pub fn wait(&self) {
        let mut done = self
            .shared
            .stop
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = self
                .shared
                .stop
                .cv
                .wait(done)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A handle that stops this sink from another thread (e.g. a signal
    /// handler thread while the main thread is in [`wait`](Self::wait)).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.shared.clone())
    }

    /// Stops accepting, closes every connection, joins the threads and
    /// returns the final stats.
    pub fn stop(mut self) -> SinkStats {
        self.shutdown();
        self.shared.stats()
    }

    fn shutdown(&mut self) {
        self.shared.request_stop();
        for thread in self.threads.drain(..) {
            // A panicked thread has been reported by the panic hook; the
            // counters it left are still right.
            let _ = thread.join();
        }
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Stops a sink from anywhere; see [`SinkHandle::stopper`].
#[derive(Debug, Clone)]
pub struct Stopper(Arc<Shared>);

impl Stopper {
    /// Asks the sink to stop; [`SinkHandle::wait`] returns. Idempotent.
    pub fn stop(&self) {
        self.0.request_stop();
    }
}

/// One runtime thread's state, shared by its tasks (never across threads).
pub(crate) struct Worker {
    pub shared: Arc<Shared>,
    index: usize,
    /// Open connections by id, with their fds, to shut them down on stop.
    live: RefCell<HashMap<u64, RawFd>>,
    next_id: Cell<u64>,
    /// Id-log lines not yet written (see `record`).
    pub id_lines: RefCell<Vec<u8>>,
}

impl Worker {
    /// This thread's counters.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters[self.index]
    }

    /// Writes the buffered id-log lines; errors are counted and reported once.
    pub fn flush_ids(&self) {
        let res = self
            .shared
            .recorder
            .flush_ids(&mut self.id_lines.borrow_mut());
        if let Err(e) = res {
            self.record_failed(&e);
        }
    }

    /// Counts a failure to dump or log an accepted message.
    pub fn record_failed(&self, e: &io::Error) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            eprintln!("ringpost-blast sink: recording a message failed: {e}");
        }
        bump(&self.counters().record_errors, 1);
    }
}

/// An accepted connection, registered with its thread until dropped.
pub(crate) struct Connection {
    // Field order matters: the registration is dropped (the fd forgotten)
    // before the stream closes the fd, so a stop never shuts down an fd
    // number that was already reused.
    _registration: Registration,
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
}

struct Registration {
    worker: Rc<Worker>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.worker.live.borrow_mut().remove(&self.id);
    }
}

/// Body of runtime thread `index`: reports readiness, then accepts until stopped.
fn run_thread(
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    ready: mpsc::Sender<io::Result<()>>,
) {
    // However this thread ends (even by panic), the sink must not look alive
    // to `wait`.
    struct StopOnExit(Arc<Shared>);
    impl Drop for StopOnExit {
        fn drop(&mut self) {
            self.0.request_stop();
        }
    }
    let _stop_on_exit = StopOnExit(shared.clone());

    let rt = match tokio_uring::Runtime::new(&tokio_uring::builder()) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(
                e.kind(),
                format!("cannot create an io_uring runtime: {e}"),
            )));
            return;
        }
    };
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener);
        let worker = Rc::new(Worker {
            shared,
            index,
            live: RefCell::default(),
            next_id: Cell::new(0),
            id_lines: RefCell::default(),
        });
        let _ = ready.send(Ok(()));
        accept_loop(&listener, &worker).await;
        drain(&worker).await;
    });
}

async fn accept_loop(listener: &TcpListener, worker: &Rc<Worker>) {
    loop {
        let accepted = listener.accept().await;
        if worker.shared.stopping() {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                let id = worker.next_id.get();
                worker.next_id.set(id + 1);
                worker.live.borrow_mut().insert(id, stream.as_raw_fd());
                let conn = Connection {
                    _registration: Registration {
                        worker: worker.clone(),
                        id,
                    },
                    stream,
                    peer,
                };
                tokio_uring::spawn(conn::serve(conn, worker.clone()));
            }
            // ECONNABORTED, EMFILE and the like concern one connection or
            // pass; the sink goes on.
            Err(_) => sleep(ACCEPT_ERROR_PAUSE).await,
        }
    }
}

/// Ends this thread's connections and waits for their tasks.
async fn drain(worker: &Worker) {
    for &fd in worker.live.borrow().values() {
        // SAFETY: plain syscall; the fd is open, since its connection
        // unregisters it before closing it. Shutting it down ends the task's
        // read (or write) in flight.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
    while !worker.live.borrow().is_empty() {
        sleep(Duration::from_millis(1)).await;
    }
}
