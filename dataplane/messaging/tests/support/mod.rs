//! Links that answer from a script: the one part of a
//! [`smsgw_messaging::Messaging`] the tests replace, so that they can
//! order a submit response, a receipt and a late response at will. The
//! stores, the rate limiter and the contact-policy engine are the real
//! embedded and in-process implementations.

use smsgw_core::links::{
    LinkAction, LinkControl, LinkView, OutboundMessage, Submission, SubmitError,
};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::{Notify, oneshot};

/// What a scripted link does with one submission.
pub enum Step {
    /// Answers at once.
    Answer(Result<Submission, SubmitError>),
    /// Answers once the sender fires (or is dropped).
    After(oneshot::Receiver<()>, Result<Submission, SubmitError>),
}

/// Links that answer submissions from a script, then with `fallback`;
/// every submission is recorded.
pub struct ScriptedLinks {
    script: Mutex<VecDeque<Step>>,
    fallback: Mutex<Result<Submission, SubmitError>>,
    /// Every submission: (target, message).
    pub calls: Mutex<Vec<(String, OutboundMessage)>>,
    /// Fired at the start of each submission.
    pub submitted: Notify,
}

impl ScriptedLinks {
    /// Links answering `steps` in order, then `fallback` for ever.
    pub fn new(steps: Vec<Step>, fallback: Result<Submission, SubmitError>) -> Self {
        Self {
            script: Mutex::new(steps.into()),
            fallback: Mutex::new(fallback),
            calls: Mutex::default(),
            submitted: Notify::new(),
        }
    }

    /// Submissions so far.
    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl LinkControl for ScriptedLinks {
    fn links(&self) -> Vec<LinkView> {
        Vec::new()
    }
    fn link(&self, _name: &str) -> Option<LinkView> {
        None
    }
    async fn control(&self, _name: &str, _action: LinkAction) -> Option<LinkView> {
        None
    }
    async fn submit(&self, target: &str, msg: OutboundMessage) -> Result<Submission, SubmitError> {
        self.calls.lock().unwrap().push((target.to_owned(), msg));
        self.submitted.notify_one();
        let step = self.script.lock().unwrap().pop_front();
        match step {
            Some(Step::Answer(a)) => a,
            Some(Step::After(gate, a)) => {
                let _ = gate.await;
                a
            }
            None => self.fallback.lock().unwrap().clone(),
        }
    }
}
