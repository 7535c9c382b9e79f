//! Which windows a timestamp falls in.

use std::time::Duration;

use smallvec::{SmallVec, smallvec};

use super::Window;

/// The windows of one record: tumbling and session windows give one,
/// sliding windows `size / slide`.
pub(super) type Windows = SmallVec<[Window; 4]>;

/// How records are assigned to windows, by event timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assigner {
    /// Back-to-back windows of `size` ms, aligned to the epoch plus `offset`.
    Tumbling {
        /// Window length, ms (at least 1).
        size: i64,
        /// Shift of every window start, ms.
        offset: i64,
    },
    /// Windows of `size` ms starting every `slide` ms: a record falls in
    /// `size / slide` of them.
    Sliding {
        /// Window length, ms.
        size: i64,
        /// Distance between window starts, ms.
        slide: i64,
        /// Shift of every window start, ms.
        offset: i64,
    },
    /// Per key, records less than `gap` ms apart form one session; a
    /// session ends `gap` ms after its last record.
    Session {
        /// The silence that ends a session, ms.
        gap: i64,
    },
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

impl Assigner {
    /// Tumbling windows of `size`, aligned to the epoch.
    pub fn tumbling(size: Duration) -> Self {
        Self::Tumbling {
            size: ms(size),
            offset: 0,
        }
    }

    /// Sliding windows of `size`, one starting every `slide`.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        Self::Sliding {
            size: ms(size),
            slide: ms(slide),
            offset: 0,
        }
    }

    /// Session windows closed by `gap` of silence.
    pub fn session(gap: Duration) -> Self {
        Self::Session { gap: ms(gap) }
    }

    /// Whether windows merge (sessions) rather than being fixed.
    pub fn is_merging(&self) -> bool {
        matches!(self, Self::Session { .. })
    }

    /// The windows `time` falls in, earliest start first.
    pub fn assign(&self, time: i64) -> Vec<Window> {
        self.windows_of(time).into_vec()
    }

    /// [`Assigner::assign`] without an allocation for the one window (or the
    /// few) most records fall in.
    pub(super) fn windows_of(&self, time: i64) -> Windows {
        match *self {
            Self::Tumbling { size, offset } => {
                let start = window_start(time, offset, size);
                smallvec![Window {
                    start,
                    end: start.saturating_add(size),
                }]
            }
            Self::Sliding {
                size,
                slide,
                offset,
            } => {
                let last = window_start(time, offset, slide);
                let mut windows = Windows::new();
                let mut start = last;
                while start > time.saturating_sub(size) {
                    windows.push(Window {
                        start,
                        end: start.saturating_add(size),
                    });
                    start = start.saturating_sub(slide);
                    if start == i64::MIN {
                        break;
                    }
                }
                windows.reverse();
                windows
            }
            Self::Session { gap } => smallvec![Window {
                start: time,
                end: time.saturating_add(gap),
            }],
        }
    }
}

/// The start of the window of length `size` (shifted by `offset`) that
/// holds `time`; correct for negative times too.
fn window_start(time: i64, offset: i64, size: i64) -> i64 {
    time - (time - offset).rem_euclid(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start: i64, end: i64) -> Window {
        Window { start, end }
    }

    #[test]
    fn tumbling_windows_hold_their_start_not_their_end() {
        let a = Assigner::tumbling(Duration::from_secs(60));
        assert_eq!(a.assign(0), [w(0, 60_000)]);
        assert_eq!(a.assign(59_999), [w(0, 60_000)]);
        assert_eq!(a.assign(60_000), [w(60_000, 120_000)]);
        assert_eq!(a.assign(-1), [w(-60_000, 0)]);
    }

    #[test]
    fn a_sliding_window_record_is_in_size_over_slide_windows() {
        let a = Assigner::sliding(Duration::from_secs(10), Duration::from_secs(5));
        assert_eq!(a.assign(7_000), [w(0, 10_000), w(5_000, 15_000)]);
        assert_eq!(a.assign(5_000), [w(0, 10_000), w(5_000, 15_000)]);
        assert_eq!(a.assign(4_999), [w(-5_000, 5_000), w(0, 10_000)]);
        let uneven = Assigner::sliding(Duration::from_millis(10), Duration::from_millis(3));
        for t in -20..20 {
            let windows = uneven.assign(t);
            assert!(windows.iter().all(|x| x.start <= t && t < x.end), "{t}");
            assert!(windows.len() == 3 || windows.len() == 4, "{t}: {windows:?}");
        }
    }

    #[test]
    fn a_session_starts_at_its_record() {
        let a = Assigner::session(Duration::from_secs(30));
        assert_eq!(a.assign(5), [w(5, 30_005)]);
        assert!(a.is_merging());
    }
}
