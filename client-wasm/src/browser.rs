//! Browser resources owned by Rust values: a timer, an event listener or a WebSocket with its
//! handlers lives exactly as long as its value, and dropping the value releases it
//! (`clearTimeout`, `removeEventListener`, detaching the handlers and closing the socket).
//! Nothing is leaked with `Closure::forget`.
//!
//! Timers use the global `setTimeout`, so the client also runs in workers and under jsdom.

use js_sys::Function;
use tidings_protocol::WSClientMessage;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, Event, EventTarget, MessageEvent, WebSocket};

use crate::wire::encode;

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

/// One WebSocket and its handlers. Dropping it detaches the handlers and closes the socket.
pub(crate) struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Socket {
    /// Opens a WebSocket to `url` offering `protocols` (none: no `Sec-WebSocket-Protocol`):
    /// `on_open` when the handshake completes, `on_message` with each frame's data,
    /// `on_close` with the close code and reason.
    ///
    /// # Errors
    /// What `new WebSocket(url, protocols)` threw (e.g. a malformed URL).
    pub(crate) fn open(
        url: &str,
        protocols: &[String],
        on_open: impl FnMut() + 'static,
        mut on_message: impl FnMut(JsValue) + 'static,
        mut on_close: impl FnMut(u16, &str) + 'static,
    ) -> Result<Self, JsValue> {
        let ws = if protocols.is_empty() {
            WebSocket::new(url)?
        } else {
            let offered: js_sys::Array = protocols.iter().map(|p| JsValue::from_str(p)).collect();
            WebSocket::new_with_str_sequence(url, &offered)?
        };
        let on_open = Closure::<dyn FnMut()>::new(on_open);
        let on_message =
            Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| on_message(e.data()));
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            on_close(e.code(), &e.reason());
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(Self {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        })
    }

    /// Sends `message` as one text frame.
    pub(crate) fn send(&self, message: &WSClientMessage) {
        // A failed send means the socket is closing; its close event drives the reconnect.
        let _ = self.ws.send_with_str(&encode(message));
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        // CONNECTING (0) or OPEN (1): we are giving up on it.
        if self.ws.ready_state() <= 1 {
            let _ = self.ws.close_with_code(1000);
        }
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

/// A uniform number in `[0, 1)` from `crypto.getRandomValues` (not guessable from earlier
/// outputs), or `Math.random()` where the Web Crypto API is missing.
pub(crate) fn random() -> f64 {
    let crypto = global("crypto");
    if let Some(fill) = get(&crypto, "getRandomValues").dyn_ref::<Function>() {
        let buf = js_sys::Uint32Array::new_with_length(1);
        if fill.call1(&crypto, &buf).is_ok() {
            return f64::from(buf.get_index(0)) / 4_294_967_296.0;
        }
    }
    js_sys::Math::random()
}
