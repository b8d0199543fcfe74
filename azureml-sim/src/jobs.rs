//! The BES jobs table, bounded: a job that has ended (Finished, Failed, Cancelled) expires
//! `ttl` after it ended, one never started expires `ttl` after it was submitted, and the table
//! holds at most `max` jobs. Expired jobs read as absent at once and are removed by the
//! periodic sweep, by any access to them and before a submission would find the table full.
//! Every method takes the time as an argument, so tests drive the clock.

use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum JobStatus {
    NotStarted,
    Running,
    Failed,
    Cancelled,
    Finished,
}

impl JobStatus {
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::NotStarted => "NotStarted",
            JobStatus::Running => "Running",
            JobStatus::Failed => "Failed",
            JobStatus::Cancelled => "Cancelled",
            JobStatus::Finished => "Finished",
        }
    }
}

pub struct Job {
    pub workspace: String,
    pub service: String,
    pub status: JobStatus,
    pub request: Value,
    pub results: Option<Value>,
    pub details: Option<String>,
    pub created: String,
    pub started: Option<String>,
    pub ended: Option<String>,
    /// When it was submitted and when it ended, on the table's clock.
    pub submitted_at: Instant,
    pub ended_at: Option<Instant>,
}

impl Job {
    fn expired(&self, ttl: Duration, now: Instant) -> bool {
        let since = match self.status {
            JobStatus::Running => return false,
            JobStatus::NotStarted => self.submitted_at,
            JobStatus::Failed | JobStatus::Cancelled | JobStatus::Finished => self.ended_at.unwrap_or(self.submitted_at),
        };
        now.saturating_duration_since(since) >= ttl
    }
}

/// The table refused a job: it holds `max` live jobs.
#[derive(Debug, PartialEq, Eq)]
pub struct Full {
    pub max: usize,
}

pub struct Jobs {
    map: HashMap<String, Job>,
    ttl: Duration,
    max: usize,
}

impl Jobs {
    pub fn new(ttl: Duration, max: usize) -> Jobs {
        Jobs { map: HashMap::new(), ttl, max }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Adds a job unless the table is full of live jobs.
    pub fn insert(&mut self, id: String, job: Job, now: Instant) -> Result<(), Full> {
        if self.map.len() >= self.max {
            self.sweep(now);
        }
        if self.map.len() >= self.max {
            return Err(Full { max: self.max });
        }
        self.map.insert(id, job);
        Ok(())
    }

    /// The job, unless it is absent or expired (then it is removed).
    pub fn get_mut(&mut self, id: &str, now: Instant) -> Option<&mut Job> {
        if self.map.get(id)?.expired(self.ttl, now) {
            self.map.remove(id);
            return None;
        }
        self.map.get_mut(id)
    }

    pub fn remove(&mut self, id: &str) -> Option<Job> {
        self.map.remove(id)
    }

    /// Removes every expired job; returns how many.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let before = self.map.len();
        let ttl = self.ttl;
        self.map.retain(|_, j| !j.expired(ttl, now));
        before - self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3600);

    fn job(t: Instant) -> Job {
        Job {
            workspace: "ws".into(),
            service: "svc".into(),
            status: JobStatus::NotStarted,
            request: Value::Null,
            results: None,
            details: None,
            created: String::new(),
            started: None,
            ended: None,
            submitted_at: t,
            ended_at: None,
        }
    }

    fn end(j: &mut Job, status: JobStatus, t: Instant) {
        j.status = status;
        j.ended_at = Some(t);
    }

    #[test]
    fn ended_jobs_expire_after_the_ttl() {
        let t0 = Instant::now();
        let mut jobs = Jobs::new(TTL, 100);
        for (id, status) in [("f", JobStatus::Finished), ("x", JobStatus::Failed), ("c", JobStatus::Cancelled), ("r", JobStatus::Running)] {
            jobs.insert(id.into(), job(t0), t0).unwrap();
            let j = jobs.get_mut(id, t0).unwrap();
            if status == JobStatus::Running {
                j.status = status;
            } else {
                end(j, status, t0 + Duration::from_secs(60));
            }
        }
        // Ended at t0+60s: still there just before t0+60s+ttl, gone at it.
        let almost = t0 + Duration::from_secs(60) + TTL - Duration::from_millis(1);
        assert_eq!(jobs.sweep(almost), 0);
        for id in ["f", "x", "c", "r"] {
            assert!(jobs.get_mut(id, almost).is_some(), "{id}");
        }
        let later = t0 + Duration::from_secs(60) + TTL;
        assert!(jobs.get_mut("f", later).is_none(), "expired on access");
        assert_eq!(jobs.len(), 3, "access removed it");
        assert_eq!(jobs.sweep(later), 2);
        // A running job never expires; it does once it ends.
        let much_later = later + 100 * TTL;
        assert!(jobs.get_mut("r", much_later).is_some());
        end(jobs.get_mut("r", much_later).unwrap(), JobStatus::Finished, much_later);
        assert!(jobs.get_mut("r", much_later + TTL / 2).is_some());
        assert_eq!(jobs.sweep(much_later + TTL), 1);
        assert_eq!(jobs.len(), 0);
    }

    #[test]
    fn never_started_jobs_expire_after_submission() {
        let t0 = Instant::now();
        let mut jobs = Jobs::new(Duration::from_secs(5), 10);
        jobs.insert("n".into(), job(t0), t0).unwrap();
        assert!(jobs.get_mut("n", t0 + Duration::from_secs(4)).is_some());
        assert!(jobs.get_mut("n", t0 + Duration::from_secs(5)).is_none());
        assert_eq!(jobs.len(), 0);
    }

    #[test]
    fn the_table_is_capped_and_makes_room_by_expiry() {
        let t0 = Instant::now();
        let mut jobs = Jobs::new(TTL, 3);
        for id in ["a", "b", "c"] {
            jobs.insert(id.into(), job(t0), t0).unwrap();
        }
        assert_eq!(jobs.insert("d".into(), job(t0), t0), Err(Full { max: 3 }));
        assert_eq!(jobs.len(), 3);
        // Deleting one makes room.
        jobs.remove("a");
        jobs.insert("d".into(), job(t0), t0).unwrap();
        // Running jobs are never evicted: full until something expires.
        jobs.get_mut("b", t0).unwrap().status = JobStatus::Running;
        let t1 = t0 + Duration::from_secs(10);
        end(jobs.get_mut("c", t1).unwrap(), JobStatus::Finished, t1);
        assert!(jobs.insert("e".into(), job(t1), t1 + TTL / 2).is_err());
        // At t1+ttl, "c" (ended at t1) and "d" (never started, submitted at t0) have expired.
        jobs.insert("e".into(), job(t1 + TTL), t1 + TTL).unwrap();
        assert_eq!(jobs.len(), 2);
        assert!(jobs.get_mut("b", t1 + TTL).is_some());
    }

    #[test]
    fn a_large_ttl_does_not_overflow() {
        let t0 = Instant::now();
        let mut jobs = Jobs::new(Duration::MAX, 1);
        jobs.insert("a".into(), job(t0), t0).unwrap();
        assert!(jobs.get_mut("a", t0 + Duration::from_secs(1 << 40)).is_some());
    }
}
