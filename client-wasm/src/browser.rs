//! Browser resources owned by Rust values: a timer or an event listener lives exactly as long
//! as its value, and dropping the value releases it (`clearTimeout`, `removeEventListener`).
//! Nothing is leaked with `Closure::forget`.
//!
//! Timers use the global `setTimeout`, so the client also runs in workers and under jsdom.

use js_sys::Function;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{Event, EventTarget};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &Function, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
    type Thenable;
    #[wasm_bindgen(method, js_name = catch)]
    fn catch_with(this: &Thenable, on_rejected: &Function) -> JsValue;
}

/// `promise.catch(on_rejected)`, result dropped (marks the promise handled).
pub(crate) fn catch(promise: &js_sys::Promise, on_rejected: &Function) {
    let _ = promise.unchecked_ref::<Thenable>().catch_with(on_rejected);
}

/// A pending `setTimeout`; dropping it cancels the timer and frees the closure.
#[must_use = "dropping a Timeout cancels it"]
pub(crate) struct Timeout {
    id: JsValue,
    _closure: Closure<dyn FnMut()>,
}

impl Timeout {
    /// Calls `f` once after `ms` milliseconds (negative delays run as soon as possible).
    pub(crate) fn new(ms: f64, f: impl FnMut() + 'static) -> Self {
        let closure = Closure::<dyn FnMut()>::new(f);
        let id = set_timeout(closure.as_ref().unchecked_ref(), ms.max(0.0));
        Self {
            id,
            _closure: closure,
        }
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        clear_timeout(&self.id);
    }
}

/// An event listener registered on a target; dropping it removes the listener.
#[must_use = "dropping a Listener removes it"]
pub(crate) struct Listener {
    target: EventTarget,
    kind: &'static str,
    closure: Closure<dyn FnMut(Event)>,
}

impl Listener {
    /// Listens to `kind` events on `target`; `None` when `target` is not an event target
    /// (e.g. no `document` in a worker).
    pub(crate) fn new(
        target: &JsValue,
        kind: &'static str,
        f: impl FnMut(Event) + 'static,
    ) -> Option<Self> {
        if !target.is_object() {
            return None;
        }
        let add = js_sys::Reflect::get(target, &JsValue::from_str("addEventListener")).ok()?;
        if !add.is_function() {
            return None;
        }
        let target: EventTarget = target.clone().unchecked_into();
        let closure = Closure::<dyn FnMut(Event)>::new(f);
        target
            .add_event_listener_with_callback(kind, closure.as_ref().unchecked_ref())
            .ok()?;
        Some(Self {
            target,
            kind,
            closure,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self
            .target
            .remove_event_listener_with_callback(self.kind, self.closure.as_ref().unchecked_ref());
    }
}

/// `globalThis[name]`, `undefined` when absent.
pub(crate) fn global(name: &str) -> JsValue {
    js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

/// `obj[key]`, `undefined` when absent or when `obj` is not an object.
pub(crate) fn get(obj: &JsValue, key: &str) -> JsValue {
    if !obj.is_object() && !obj.is_function() {
        return JsValue::UNDEFINED;
    }
    js_sys::Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// `obj[key] = value` on a plain object we created.
pub(crate) fn set(obj: &JsValue, key: &str, value: &JsValue) {
    let _ = js_sys::Reflect::set(obj, &JsValue::from_str(key), value);
}

/// Reports an error that has no caller to go to (a listener threw).
pub(crate) fn report(what: &str, error: &JsValue) {
    web_sys::console::error_2(&JsValue::from_str(what), error);
}
