//! The typed state handles.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::cache::{self, Slot};
use crate::Error;

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(value).map_err(|e| Error::new(format!("cannot encode state: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| {
        Error::new(format!(
            "cannot decode state (was its type changed? then give the state a new \
                 `.version(n)` and a `.migrate(...)` from the old type): {e}"
        ))
    })
}

/// One value per key.
#[derive(Debug)]
pub struct ValueState<T> {
    id: u32,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for ValueState<T> {}

impl<T> ValueState<T> {
    pub(super) fn new(id: u32) -> Self {
        Self {
            id,
            _type: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// The current key's value.
    pub fn get(&self) -> Result<Option<T>, Error> {
        cache::with_value(self.id, |v| v.map(decode).transpose())?
    }

    /// Sets the current key's value.
    pub fn set(&self, value: &T) -> Result<(), Error> {
        let fill = |buf: Vec<u8>| {
            postcard::to_extend(value, buf)
                .map_err(|e| Error::new(format!("cannot encode state: {e}")))
        };
        cache::write_value(self.id, Some(&fill))
    }

    /// Removes the current key's value.
    pub fn clear(&self) -> Result<(), Error> {
        cache::write_value(self.id, None)
    }
}

/// A list per key.
#[derive(Debug)]
pub struct ListState<T> {
    id: u32,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ListState<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for ListState<T> {}

impl<T> ListState<T> {
    pub(super) fn new(id: u32) -> Self {
        Self {
            id,
            _type: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> ListState<T> {
    /// The current key's elements, in order.
    pub fn get(&self) -> Result<Vec<T>, Error> {
        cache::with_list(self.id, |items| items.iter().map(|b| decode(b)).collect())?
    }

    /// Appends an element (without reading the list).
    pub fn append(&self, value: &T) -> Result<(), Error> {
        let bytes = encode(value)?;
        cache::append_list(self.id, bytes)
    }

    /// Replaces the current key's elements.
    pub fn replace(&self, values: &[T]) -> Result<(), Error> {
        let items = values.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        cache::update_slot(self.id, Slot::List(items))
    }

    /// Removes every element.
    pub fn clear(&self) -> Result<(), Error> {
        cache::update_slot(self.id, Slot::List(Vec::new()))
    }
}

/// A map per key.
#[derive(Debug)]
pub struct MapState<K, V> {
    id: u32,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for MapState<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for MapState<K, V> {}

impl<K, V> MapState<K, V> {
    pub(super) fn new(id: u32) -> Self {
        Self {
            id,
            _type: PhantomData,
        }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> MapState<K, V> {
    /// The value under `map_key` for the current key.
    pub fn get(&self, map_key: &K) -> Result<Option<V>, Error> {
        let k = encode(map_key)?;
        cache::with_map_entry(self.id, &k, |v| v.map(decode).transpose())?
    }

    /// Whether `map_key` is present for the current key.
    pub fn contains(&self, map_key: &K) -> Result<bool, Error> {
        let k = encode(map_key)?;
        cache::with_map_entry(self.id, &k, |v| v.is_some())
    }

    /// Puts `value` under `map_key` for the current key.
    pub fn put(&self, map_key: &K, value: &V) -> Result<(), Error> {
        cache::write_map_entry(self.id, encode(map_key)?, Some(encode(value)?))
    }

    /// Removes `map_key` for the current key.
    pub fn remove(&self, map_key: &K) -> Result<(), Error> {
        cache::write_map_entry(self.id, encode(map_key)?, None)
    }

    /// Every entry for the current key, ordered by encoded map key.
    pub fn entries(&self) -> Result<Vec<(K, V)>, Error> {
        cache::with_map(self.id, |map| {
            map.iter()
                .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
                .collect()
        })?
    }

    /// Every map key for the current key, ordered by encoded map key.
    pub fn keys(&self) -> Result<Vec<K>, Error> {
        cache::with_map(self.id, |map| map.keys().map(|k| decode(k)).collect())?
    }

    /// Removes every entry for the current key.
    pub fn clear(&self) -> Result<(), Error> {
        cache::update_slot(self.id, Slot::Map(Default::default()))
    }
}

/// A value per key that new values are folded into (Flink's `ReducingState`).
#[derive(Debug)]
pub struct ReducingState<T> {
    value: ValueState<T>,
    reduce: fn(T, T) -> T,
}

impl<T> Clone for ReducingState<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for ReducingState<T> {}

impl<T> ReducingState<T> {
    pub(super) fn new(value: ValueState<T>, reduce: fn(T, T) -> T) -> Self {
        Self { value, reduce }
    }
}

impl<T: Serialize + DeserializeOwned> ReducingState<T> {
    /// Folds `value` into the current key's value, and returns the result.
    pub fn add(&self, value: T) -> Result<T, Error>
    where
        T: Clone,
    {
        let next = match self.value.get()? {
            Some(current) => (self.reduce)(current, value),
            None => value,
        };
        self.value.set(&next)?;
        Ok(next)
    }

    /// The current key's value.
    pub fn get(&self) -> Result<Option<T>, Error> {
        self.value.get()
    }

    /// Removes the current key's value.
    pub fn clear(&self) -> Result<(), Error> {
        self.value.clear()
    }
}

/// How an [`AggregatingState`] folds inputs into an accumulator and reads a
/// result from it (Flink's `AggregateFunction`).
pub trait Aggregator: 'static {
    /// What `add` takes.
    type In;
    /// What is stored per key.
    type Acc: Serialize + DeserializeOwned;
    /// What `get` returns.
    type Out;
    /// A fresh accumulator.
    fn create(&self) -> Self::Acc;
    /// Folds one input into the accumulator.
    fn add(&self, acc: Self::Acc, input: Self::In) -> Self::Acc;
    /// The result for an accumulator.
    fn result(&self, acc: &Self::Acc) -> Self::Out;
    /// One accumulator for two (what session windows do when a record
    /// joins two sessions); `None`, the default, when it cannot.
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Option<Self::Acc> {
        let _ = (a, b);
        None
    }
}

/// An accumulator per key (Flink's `AggregatingState`).
#[derive(Debug)]
pub struct AggregatingState<A: Aggregator> {
    acc: ValueState<A::Acc>,
    aggregator: A,
}

impl<A: Aggregator> AggregatingState<A> {
    pub(super) fn new(acc: ValueState<A::Acc>, aggregator: A) -> Self {
        Self { acc, aggregator }
    }

    /// Folds `input` into the current key's accumulator.
    pub fn add(&self, input: A::In) -> Result<(), Error> {
        let acc = self.acc.get()?.unwrap_or_else(|| self.aggregator.create());
        self.acc.set(&self.aggregator.add(acc, input))
    }

    /// The current key's result, if anything was added.
    pub fn get(&self) -> Result<Option<A::Out>, Error> {
        Ok(self.acc.get()?.map(|acc| self.aggregator.result(&acc)))
    }

    /// Removes the current key's accumulator.
    pub fn clear(&self) -> Result<(), Error> {
        self.acc.clear()
    }
}
