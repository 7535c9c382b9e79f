//! The input side of a task: several channels merged into one stream.

use crossbeam_channel::{Receiver, Select};

use super::TaskError;
use crate::batch::{Batch, Message};

/// The input channels of one task instance, merged.
#[derive(Debug)]
pub struct InputGate {
    channels: Vec<Receiver<Message>>,
    open: Vec<bool>,
    open_count: usize,
}

impl InputGate {
    /// A gate over these channels.
    pub fn new(channels: Vec<Receiver<Message>>) -> Self {
        let open_count = channels.len();
        Self {
            open: vec![true; open_count],
            channels,
            open_count,
        }
    }

    /// The next batch from any open channel, with the channel's index; `None`
    /// once every channel has ended.
    pub fn next_batch(&mut self) -> Result<Option<(usize, Batch)>, TaskError> {
        loop {
            if self.open_count == 0 {
                return Ok(None);
            }
            let (index, message) = self.recv_any()?;
            match message {
                Message::Batch(batch) => return Ok(Some((index, batch))),
                Message::End => {
                    self.open[index] = false;
                    self.open_count -= 1;
                }
            }
        }
    }

    fn recv_any(&self) -> Result<(usize, Message), TaskError> {
        if self.channels.len() == 1 {
            return self.channels[0]
                .recv()
                .map(|m| (0, m))
                .map_err(|_| TaskError::UpstreamGone);
        }
        let mut select = Select::new();
        let mut indices = Vec::with_capacity(self.open_count);
        for (i, rx) in self
            .channels
            .iter()
            .enumerate()
            .filter(|(i, _)| self.open[*i])
        {
            select.recv(rx);
            indices.push(i);
        }
        let op = select.select();
        let index = indices[op.index()];
        op.recv(&self.channels[index])
            .map(|m| (index, m))
            .map_err(|_| TaskError::UpstreamGone)
    }
}
