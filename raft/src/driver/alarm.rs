//! A deadline the driver's select loop waits on only while it is set.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub(crate) struct Alarm {
    sleep: Pin<Box<Sleep>>,
    at: Option<Instant>,
}

impl Alarm {
    pub(crate) fn new() -> Alarm {
        Alarm {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            at: None,
        }
    }

    /// Sets the deadline, or turns the alarm off with `None`; setting the
    /// deadline it already has changes nothing.
    pub(crate) fn set(&mut self, at: Option<Instant>) {
        if at != self.at {
            self.at = at;
            if let Some(at) = at {
                self.sleep.as_mut().reset(at);
            }
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.at.is_some()
    }

    /// Waits for the deadline, then turns the alarm off. Poll it only while
    /// the alarm is set.
    pub(crate) async fn ring(&mut self) {
        self.sleep.as_mut().await;
        self.at = None;
    }
}
