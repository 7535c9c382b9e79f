//! Test plugin: a component built against an older version of the
//! `weir:operator` package (0.1.0), as a plugin built with an old guest-sdk
//! is: the host must refuse it and say which version it found.
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
            package weir:operator@0.1.0;
            interface host { emit: func(batch: list<u8>); }
            interface operator { process: func(batch: list<u8>); }
            world plugin { import host; export operator; }
        "#,
    });
}

struct Component;

impl bindings::exports::weir::operator::operator::Guest for Component {
    fn process(batch: Vec<u8>) {
        bindings::weir::operator::host::emit(&batch);
    }
}

bindings::export!(Component with_types_in bindings);
