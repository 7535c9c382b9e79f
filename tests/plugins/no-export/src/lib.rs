//! Test plugin: a component that exports something, but not Weir's operator.
#![cfg(target_arch = "wasm32")]

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    reason = "generated bindings"
)]
mod bindings {
    wit_bindgen::generate!({
        inline: r#"
            package test:no-export;
            world other { export hello: func() -> string; }
        "#,
    });
}

struct Component;

impl bindings::Guest for Component {
    fn hello() -> String {
        "hello".to_owned()
    }
}

bindings::export!(Component with_types_in bindings);
