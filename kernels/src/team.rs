//! A team of spinning worker threads for the forward pass, as ggml runs its graph: the workers
//! busy-wait for the next operation instead of sleeping, because a forward is hundreds of
//! short parallel steps (seven matmuls and an attention per layer) and waking a sleeping
//! thread costs more than many of those steps take. rayon's pool parks idle workers; measured
//! on the Q4_K_M fixture with 2 threads, decode spent a quarter of its time in the kernel's
//! futex wake-ups and context switches (31,900 switches for 65 tokens).
//!
//! [`for_each`] runs `f(0..n)` on the calling thread plus `threads − 1` workers, each task
//! handed out once through an atomic counter. Results never depend on which thread ran a
//! task: callers give every task its own disjoint output. A worker spins for
//! [`SPIN`] after its last task, then sleeps on a condition variable until the next job.
//!
//! Nested or concurrent use (a task that calls [`for_each`], two threads running forwards at
//! once) is safe: whoever does not get the team runs its tasks inline, in order.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
pub const SPIN: Duration = Duration::from_millis(2);

/// Spins before a waiting thread starts yielding its core (a few microseconds: longer than a
/// step's imbalance on an idle machine, short against a scheduler's time slice).
const YIELD_AFTER: u32 = 4096;

/// The most threads a team holds (the calling thread included); the worker count fits the
/// epoch word's low byte.
const MAX_THREADS: usize = 256;

/// One parallel step: tasks `0..n` of `f`, run by the caller and `workers` workers.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    /// Workers that have not yet finished with this job.
    active: AtomicUsize,
    /// Set when a task panicked on a worker.
    panicked: AtomicUsize,
}

impl Job<'_> {
    fn run_tasks(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            (self.f)(i);
        }
    }
}

struct Team {
    /// `(job counter << 8) | workers of the job`: bumped once per job, workers wait for it
    /// to change. The worker count travels in the same word so that a worker left out of a
    /// job never has to read the job (which may be gone by then).
    epoch: AtomicU64,
    /// The current job (a `Job` on the caller's stack, alive until every worker is done).
    job: AtomicPtr<()>,
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    /// Held by the one caller using the team.
    busy: Mutex<()>,
    /// Workers spawned so far.
    spawned: Mutex<usize>,
}

static TEAM: OnceLock<&'static Team> = OnceLock::new();

thread_local! {
    static IN_TEAM: Cell<bool> = const { Cell::new(false) };
}

fn team() -> &'static Team {
    TEAM.get_or_init(|| {
        Box::leak(Box::new(Team {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            busy: Mutex::new(()),
            spawned: Mutex::new(0),
        }))
    })
}

/// The number of threads a step uses: rayon's current thread count (kiln's `--threads`).
pub fn threads() -> usize {
    rayon::current_num_threads().clamp(1, MAX_THREADS)
}

/// Runs `f(i)` for every `i` in `0..n`, spread over [`threads`] threads; returns when all
/// are done. A panic in a task is re-raised here after every thread has stopped.
pub fn for_each(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let threads = threads().min(n);
    if threads <= 1 || IN_TEAM.with(|c| c.get()) {
        return (0..n).for_each(f);
    }
    let t = team();
    let Ok(_busy) = t.busy.try_lock() else {
        return (0..n).for_each(f);
    };
    let workers = threads - 1;
    t.ensure_workers(workers);
    let job = Job {
        f,
        n,
        next: AtomicUsize::new(0),
        active: AtomicUsize::new(workers),
        panicked: AtomicUsize::new(0),
    };
    t.job.store(&job as *const Job as *mut (), Ordering::SeqCst);
    let e = t.epoch.load(Ordering::SeqCst);
    t.epoch
        .store(((e >> 8) + 1) << 8 | workers as u64, Ordering::SeqCst);
    if t.sleeping.load(Ordering::SeqCst) > 0 {
        let _g = t.lock.lock().unwrap_or_else(|e| e.into_inner());
        t.wake.notify_all();
    }
    IN_TEAM.with(|c| c.set(true));
    let mine = catch_unwind(AssertUnwindSafe(|| job.run_tasks()));
    IN_TEAM.with(|c| c.set(false));
    // The job lives on this stack: wait for every worker before returning or unwinding.
    // Spin briefly, then yield: when more threads are runnable than there are cores (two
    // builds on one CI runner, tests in parallel), the worker being waited for may be the
    // one this thread keeps off its core.
    let mut spins = 0u32;
    while job.active.load(Ordering::Acquire) > 0 {
        spins = spins.saturating_add(1);
        if spins < YIELD_AFTER {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    if let Err(p) = mine {
        resume_unwind(p);
    }
    if job.panicked.load(Ordering::Relaxed) > 0 {
        panic!("a task of a parallel kernel step panicked on a worker thread");
    }
}

impl Team {
    fn ensure_workers(&'static self, want: usize) {
        let mut spawned = self.spawned.lock().unwrap_or_else(|e| e.into_inner());
        while *spawned < want {
            let id = *spawned;
            let seen = self.epoch.load(Ordering::SeqCst);
            std::thread::Builder::new()
                .name(format!("kiln-team-{id}"))
                .spawn(move || self.worker(id, seen))
                .expect("spawn a kernel worker thread");
            *spawned += 1;
        }
    }

    fn worker(&'static self, id: usize, mut seen: u64) {
        IN_TEAM.with(|c| c.set(true));
        loop {
            seen = self.wait(seen);
            if id >= (seen & 0xFF) as usize {
                continue;
            }
            // SAFETY: the caller stored a live `Job` before publishing the epoch and does not
            // return (nor publish another job) until `active` reaches zero, which needs this
            // worker's decrement.
            let job = unsafe { &*(self.job.load(Ordering::SeqCst) as *const Job) };
            if catch_unwind(AssertUnwindSafe(|| job.run_tasks())).is_err() {
                job.panicked.fetch_add(1, Ordering::Relaxed);
            }
            job.active.fetch_sub(1, Ordering::Release);
        }
    }

    /// Waits until the epoch differs from `seen`: spinning for [`SPIN`], then asleep.
    fn wait(&self, seen: u64) -> u64 {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = self.epoch.load(Ordering::SeqCst);
            if e != seen {
                return e;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(YIELD_AFTER) {
                // Let another runnable thread have the core now and then (oversubscribed).
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                break;
            }
        }
        let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        loop {
            let e = self.epoch.load(Ordering::SeqCst);
            if e != seen {
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
                return e;
            }
            g = self.wake.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_once() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            for n in [0, 1, 2, 7, 1000] {
                let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                for_each(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "n = {n}"
                );
            }
        });
    }

    #[test]
    fn nested_and_concurrent_use_runs_inline() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let total = AtomicU32::new(0);
        pool.install(|| {
            rayon::join(
                || {
                    for_each(8, &|_| {
                        for_each(4, &|_| {
                            total.fetch_add(1, Ordering::Relaxed);
                        })
                    })
                },
                || {
                    for_each(16, &|_| {
                        total.fetch_add(1, Ordering::Relaxed);
                    })
                },
            )
        });
        assert_eq!(total.load(Ordering::Relaxed), 8 * 4 + 16);
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_team_survives() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let r = catch_unwind(|| for_each(64, &|i| assert!(i != 40, "task 40")));
            assert!(r.is_err());
            let n = AtomicU32::new(0);
            for_each(64, &|_| {
                n.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(n.load(Ordering::Relaxed), 64);
        });
    }
}
