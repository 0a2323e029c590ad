//! Effects: the calls into application code a state change causes, as values.
//!
//! The state machine never calls application code while the state is borrowed: it returns
//! [`Effect`]s — call a topic or status listener, settle a `ready` promise, invalidate queries
//! of a bound TanStack `QueryClient` — and [`run`] performs them after the borrow ends, so a
//! callback may call back into the client (unsubscribe from inside a listener, close from a
//! status listener). A callback that throws is reported with `console.error` and the others
//! still run. This module also owns what those calls are made of: the [`Binding`]s of
//! `bindQueryClient`, the halves of a `ready` promise and the frozen status object.

use js_sys::{Array, Function, Object};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::browser;
use crate::rules::{QueryKey, Rules};
use crate::status::Status;

/// The two halves of a `ready` promise.
pub(super) struct Ready {
    pub(super) resolve: Function,
    pub(super) reject: Function,
}

/// A query client bound with `bindQueryClient`.
pub(super) struct Binding {
    pub(super) id: u32,
    pub(super) query_client: JsValue,
    pub(super) rules: Rules,
    pub(super) on_event: Option<Function>,
}

/// A call to application code, made after the state borrow ends.
pub(super) enum Effect {
    /// `f(arg)`: a listener, or one half of a `ready` promise.
    Call(Function, JsValue),
    /// `invalidateQueries` for each key.
    Invalidate {
        query_client: JsValue,
        keys: Vec<QueryKey>,
    },
    /// `rules.onEvent(event)`'s keys, or `fallback` when it returns no array.
    InvalidateForEvent {
        query_client: JsValue,
        on_event: Function,
        event: JsValue,
        fallback: Vec<QueryKey>,
    },
}

/// What every binding invalidates for `topic` (after a reconnect, once its ack arrives).
pub(super) fn invalidations_for_topic(bindings: &[Binding], topic: &str) -> Vec<Effect> {
    bindings
        .iter()
        .map(|b| Effect::Invalidate {
            query_client: b.query_client.clone(),
            keys: b.rules.keys_for(topic),
        })
        .collect()
}

/// What every binding invalidates for `event` on `topic`.
pub(super) fn invalidations_for_event(
    bindings: &[Binding],
    topic: &str,
    event: &JsValue,
) -> Vec<Effect> {
    bindings
        .iter()
        .map(|b| match &b.on_event {
            Some(on_event) => Effect::InvalidateForEvent {
                query_client: b.query_client.clone(),
                on_event: on_event.clone(),
                event: event.clone(),
                fallback: b.rules.keys_for(topic),
            },
            None => Effect::Invalidate {
                query_client: b.query_client.clone(),
                keys: b.rules.keys_for(topic),
            },
        })
        .collect()
}

fn invalidate(query_client: &JsValue, key: &JsValue) {
    let f = browser::get(query_client, "invalidateQueries");
    if let Some(f) = f.dyn_ref::<Function>() {
        let filters = Object::new();
        browser::set(&filters, "queryKey", key);
        if let Err(e) = f.call1(query_client, &filters) {
            browser::report("tidings: invalidateQueries threw", &e);
        }
    }
}

fn key_to_js(key: &QueryKey) -> JsValue {
    key.iter()
        .map(|s| JsValue::from_str(s))
        .collect::<Array>()
        .into()
}

/// Performs `effects` in order (no borrow of the state may be held).
pub(super) fn run(effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::Call(f, arg) => {
                if let Err(e) = f.call1(&JsValue::UNDEFINED, &arg) {
                    browser::report("tidings: a listener threw", &e);
                }
            }
            Effect::Invalidate { query_client, keys } => {
                for key in &keys {
                    invalidate(&query_client, &key_to_js(key));
                }
            }
            Effect::InvalidateForEvent {
                query_client,
                on_event,
                event,
                fallback,
            } => match on_event.call1(&JsValue::UNDEFINED, &event) {
                Ok(keys) if Array::is_array(&keys) => {
                    for key in Array::from(&keys).iter() {
                        invalidate(&query_client, &key);
                    }
                }
                Ok(_) => {
                    for key in &fallback {
                        invalidate(&query_client, &key_to_js(key));
                    }
                }
                Err(e) => browser::report("tidings: rules.onEvent threw", &e),
            },
        }
    }
}

/// A JS `Error` with `message`.
pub(super) fn js_error(message: &str) -> JsValue {
    js_sys::Error::new(message).into()
}

/// The frozen `ConnectionStatus` object of `status`.
pub(super) fn status_to_js(status: &Status) -> JsValue {
    let object = Object::new();
    let obj: &JsValue = &object;
    browser::set(obj, "state", &JsValue::from_str(status.state.as_str()));
    if let Some(a) = status.attempt {
        browser::set(obj, "attempt", &JsValue::from(a));
    }
    if let Some(d) = status.next_delay_ms {
        browser::set(obj, "nextDelayMs", &JsValue::from(d));
    }
    browser::set(obj, "attempts", &JsValue::from(status.attempts));
    if let Some(c) = status.close_code {
        browser::set(obj, "closeCode", &JsValue::from(c));
    }
    if let Some(r) = &status.close_reason {
        browser::set(obj, "closeReason", &JsValue::from_str(r));
    }
    Object::freeze(&object);
    object.into()
}
