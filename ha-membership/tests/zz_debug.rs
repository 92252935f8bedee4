use ha_core::Instant;
use ha_membership::sim::{self, scenario::Scenario, HaNode, RunSpec, SimEvent, SimNode, ViewChange};
use std::cell::RefCell;
use std::net::SocketAddr;

thread_local! { static LOG: RefCell<Vec<(f64, usize, SimEvent)>> = RefCell::new(Vec::new()); }

struct W {
    inner: HaNode,
    i: usize,
    t0: Instant,
    now: Instant,
}
impl SimNode for W {
    fn handle(&mut self, now: Instant, from: SocketAddr, p: &[u8]) {
        self.now = now;
        self.inner.handle(now, from, p)
    }
    fn tick(&mut self, now: Instant) {
        self.now = now;
        self.inner.tick(now)
    }
    fn next_wake(&self) -> Instant {
        self.inner.next_wake()
    }
    fn leave(&mut self, now: Instant) {
        self.inner.leave(now)
    }
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.inner.poll_transmit()
    }
    fn poll_event(&mut self) -> Option<SimEvent> {
        let e = self.inner.poll_event()?;
        let t = (self.now - self.t0).as_secs_f64();
        LOG.with(|l| l.borrow_mut().push((t, self.i, e)));
        Some(e)
    }
    fn poll_sync(&mut self) -> Option<SocketAddr> {
        self.inner.poll_sync()
    }
    fn local_state(&mut self, j: bool) -> Vec<u8> {
        self.inner.local_state(j)
    }
    fn handle_state(&mut self, now: Instant, s: &[u8]) {
        self.now = now;
        self.inner.handle_state(now, s)
    }
}

#[test]
fn debug() {
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/scenarios/swim/loss_64.toml");
    let s: Scenario = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let spec = RunSpec { nodes: 64, seed, quick: false, lifeguard: true };
    let mut inner = sim::ha_spawner(&s, &spec).unwrap();
    let mut t0 = None;
    let mut spawn = |i: usize, now: Instant, seed: u64, seeds: &[SocketAddr]| {
        let t0 = *t0.get_or_insert(now);
        W { inner: inner(i, now, seed, seeds), i, t0, now }
    };
    let out = sim::run(&s, &spec, &mut spawn).unwrap();
    eprintln!("{out:?}");
    LOG.with(|l| {
        let l = l.borrow();
        for (k, (t, i, e)) in l.iter().enumerate() {
            if e.change == ViewChange::Dead {
                eprintln!("DEAD t={t:.2} obs={i} subj={} inc={:?}", e.subject, e.incarnation);
                for (t2, i2, e2) in l[..k].iter() {
                    if e2.subject == e.subject
                        && (*i2 == *i || e2.change != ViewChange::Suspect)
                        && t - t2 < 60.0
                        && !(e2.change == ViewChange::Alive
                            && *i2 != *i
                            && e2.incarnation == e.incarnation.map(|x| x + 1)
                            && false)
                    {
                        eprintln!("   t={t2:.2} obs={i2} {:?} {:?}", e2.change, e2.incarnation);
                    }
                }
            }
        }
    });
}
