//! Drives an [`Operator`] from the component exports: decodes each input batch,
//! calls the operator per record, and hands its output to the host in batches.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;

use weir_codec::{BatchReader, BatchWriter};

use crate::time::{TimeDomain, Timer};
use crate::{Config, Context, InitContext, Operator, RestoredState, SavedState, state, sys};

/// What the host says about time at each call.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Clock {
    pub(crate) watermark: Option<i64>,
    pub(crate) processing_time: i64,
}

/// Output is handed to the host when it reaches this size, even mid-batch, so a
/// guest that emits a lot per record keeps a bounded buffer.
const FLUSH_AT_BYTES: usize = 1 << 20;

/// An error to report to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) record_index: Option<u32>,
    pub(crate) message: String,
}

thread_local! {
    /// Index of the record being processed, so a panic can say which one.
    static CURRENT_RECORD: Cell<Option<u32>> = const { Cell::new(None) };
    /// The one operator instance of this component instance.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// One operator and its output buffer.
pub(crate) struct Instance<T> {
    operator: T,
    ctx: Context,
}

impl<T: Operator> Instance<T> {
    pub(crate) fn init(
        operator_id: String,
        instance: u32,
        config: &str,
        inputs: Vec<String>,
    ) -> Result<Self, Failure> {
        let fail = |message: String| Failure {
            record_index: None,
            message,
        };
        let config = Config::from_json(config).map_err(|e| fail(e.to_string()))?;
        let init = InitContext {
            operator_id,
            instance,
            config,
            inputs,
            outputs: T::OUTPUTS,
        };
        state::forget_declarations();
        let operator = T::init(&init).map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            operator,
            ctx: Context::new(T::OUTPUTS.len()),
        })
    }

    /// Clears the output, sets the clock and prefetches the batch's state;
    /// the batch, decoded.
    fn begin<'b>(&mut self, batch: &'b [u8], clock: Clock) -> Result<BatchReader<'b>, Failure> {
        self.ctx.out.clear();
        self.ctx.side.iter_mut().for_each(BatchWriter::clear);
        self.ctx.watermark = clock.watermark;
        self.ctx.processing_time = clock.processing_time;
        let reader = BatchReader::new(batch).map_err(|e| Failure {
            record_index: None,
            message: format!("the host sent a malformed batch: {e}"),
        })?;
        state::begin_batch(&reader).map_err(|message| Failure {
            record_index: None,
            message,
        })?;
        Ok(reader)
    }

    pub(crate) fn process(
        &mut self,
        input: u32,
        batch: &[u8],
        clock: Clock,
    ) -> Result<(), Failure> {
        let reader = self.begin(batch, clock)?;
        self.ctx.input = input;
        let result = self.process_records(&reader);
        self.finish(result)
    }

    /// Fires a batch of timers (key, time as the timestamp, domain as the
    /// one value byte), each with its key as the current key.
    pub(crate) fn on_timer(&mut self, timers: &[u8], clock: Clock) -> Result<(), Failure> {
        let reader = self.begin(timers, clock)?;
        self.ctx.input = 0;
        let result = (|| {
            for (index, timer) in (0u32..).zip(reader.iter()) {
                let bad = |message: String| Failure {
                    record_index: None,
                    message: format!("the host sent a malformed timer: {message}"),
                };
                let timer = timer.map_err(|e| bad(e.to_string()))?;
                let domain = match timer.value {
                    [code] => TimeDomain::from_code(u32::from(*code)),
                    _ => None,
                }
                .ok_or_else(|| bad(format!("domain {:?}", timer.value)))?;
                let time = timer.timestamp.ok_or_else(|| bad("no time".into()))?;
                state::set_current_key(index);
                self.ctx.timestamp = Some(time);
                let fired = Timer {
                    key: timer.key,
                    time,
                    domain,
                };
                self.operator
                    .on_timer(fired, &mut self.ctx)
                    .map_err(|e| Failure {
                        record_index: None,
                        message: format!(
                            "on_timer failed for key {:?} at {time}: {e}",
                            String::from_utf8_lossy(timer.key)
                        ),
                    })?;
                if self.ctx.out.encoded_len() >= FLUSH_AT_BYTES {
                    self.flush();
                }
            }
            Ok(())
        })();
        self.finish(result)
    }

    fn finish(&mut self, result: Result<(), Failure>) -> Result<(), Failure> {
        CURRENT_RECORD.set(None);
        match result {
            Ok(()) => {
                // State first, so output that goes downstream reflects state
                // the host already has.
                if state::is_keyed() {
                    state::end_batch();
                }
                self.flush();
                Ok(())
            }
            Err(failure) => {
                state::discard_batch();
                Err(failure)
            }
        }
    }

    fn process_records(&mut self, reader: &BatchReader<'_>) -> Result<(), Failure> {
        let keyed = state::is_keyed();
        for (index, record) in (0u32..).zip(reader.iter()) {
            let record = record.map_err(|e| Failure {
                record_index: Some(index),
                message: format!("the host sent a malformed batch: {e}"),
            })?;
            CURRENT_RECORD.set(Some(index));
            if keyed {
                state::set_current_key(index);
            }
            self.ctx.timestamp = record.timestamp;
            self.operator
                .process(record, &mut self.ctx)
                .map_err(|e| Failure {
                    record_index: Some(index),
                    message: e.to_string(),
                })?;
            if self.ctx.out.encoded_len() >= FLUSH_AT_BYTES {
                self.flush();
            }
        }
        Ok(())
    }

    pub(crate) fn snapshot(&mut self) -> Result<Option<SavedState>, Failure> {
        self.operator.snapshot().map_err(|e| Failure {
            record_index: None,
            message: format!("snapshot failed: {e}"),
        })
    }

    pub(crate) fn restore(&mut self, version: u32, parts: Vec<Vec<u8>>) -> Result<(), Failure> {
        if parts.is_empty() {
            return Ok(());
        }
        self.operator
            .restore(RestoredState { version, parts })
            .map_err(|e| Failure {
                record_index: None,
                message: format!("restore failed: {e}"),
            })
    }

    fn flush(&mut self) {
        if !self.ctx.out.is_empty() {
            sys::emit(0, self.ctx.out.as_bytes());
            self.ctx.out.clear();
        }
        for (i, side) in (1u32..).zip(&mut self.ctx.side) {
            if !side.is_empty() {
                sys::emit(i, side.as_bytes());
                side.clear();
            }
        }
    }
}

/// The component's exports for operator type `T`; named by [`crate::export_operator!`].
pub struct Export<T>(PhantomData<T>);

use crate::__private::bindings::exports::weir::operator::operator::Guest;
use crate::__private::bindings::weir::operator::types::{
    Clock as HostClock, Descriptor, OperatorState, PluginError,
};

impl From<HostClock> for Clock {
    fn from(c: HostClock) -> Self {
        Self {
            watermark: c.watermark,
            processing_time: c.processing_time,
        }
    }
}

impl From<Failure> for PluginError {
    fn from(f: Failure) -> Self {
        PluginError {
            record_index: f.record_index,
            message: f.message,
        }
    }
}

impl<T: Operator> Guest for Export<T> {
    fn describe() -> Descriptor {
        Descriptor {
            outputs: T::OUTPUTS.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    fn init(
        operator_id: String,
        instance: u32,
        config: String,
        inputs: Vec<String>,
    ) -> Result<(), PluginError> {
        install_panic_hook();
        let instance = Instance::<T>::init(operator_id, instance, &config, inputs);
        crate::metrics::flush();
        let instance = instance?;
        INSTANCE.with_borrow_mut(|slot| *slot = Some(Box::new(instance)));
        Ok(())
    }

    fn process(input: u32, batch: Vec<u8>, clock: HostClock) -> Result<(), PluginError> {
        with_instance::<T, _>("process", |instance| {
            instance.process(input, &batch, clock.into())
        })
    }

    fn on_timer(timers: Vec<u8>, clock: HostClock) -> Result<(), PluginError> {
        with_instance::<T, _>("on-timer", |instance| {
            instance.on_timer(&timers, clock.into())
        })
    }

    fn snapshot() -> Result<OperatorState, PluginError> {
        let saved = with_instance::<T, _>("snapshot", Instance::snapshot)?;
        Ok(saved.map_or(
            OperatorState {
                version: 0,
                bytes: Vec::new(),
            },
            |s| OperatorState {
                version: s.version,
                bytes: s.bytes,
            },
        ))
    }

    fn restore(version: u32, parts: Vec<Vec<u8>>) -> Result<(), PluginError> {
        with_instance::<T, _>("restore", |instance| instance.restore(version, parts))
    }

    fn migrate_state(
        state: u32,
        from_version: u32,
        values: Vec<u8>,
    ) -> Result<Vec<u8>, PluginError> {
        let converted = state::migrate(state, from_version, &values);
        crate::metrics::flush();
        converted.map_err(|message| PluginError {
            record_index: None,
            message,
        })
    }
}

fn with_instance<T: Operator, R>(
    call: &str,
    f: impl FnOnce(&mut Instance<T>) -> Result<R, Failure>,
) -> Result<R, PluginError> {
    INSTANCE.with_borrow_mut(|slot| {
        let instance = slot
            .as_mut()
            .and_then(|any| any.downcast_mut::<Instance<T>>())
            .ok_or_else(|| PluginError {
                record_index: None,
                message: format!("{call} was called before init"),
            })?;
        let result = f(instance).map_err(PluginError::from);
        crate::metrics::flush();
        result
    })
}

/// A panic in a component aborts, which the host sees as a bare trap; the hook
/// first logs the message and the record, so the host's error can name them.
fn install_panic_hook() {
    if cfg!(target_arch = "wasm32") {
        std::panic::set_hook(Box::new(|info| {
            let at = match CURRENT_RECORD.get() {
                Some(index) => format!(" while processing record {index} of the batch"),
                None => String::new(),
            };
            sys::log(
                crate::Level::Error,
                &format!("operator panicked{at}: {info}"),
            );
        }));
    }
}
