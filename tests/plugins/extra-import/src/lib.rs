//! Test plugin: a component that imports an interface Weir does not offer.
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
            package test:extra-import;
            interface clock { now: func() -> u64; }
            world extra { import clock; export run: func() -> u64; }
        "#,
    });
}

struct Component;

impl bindings::Guest for Component {
    fn run() -> u64 {
        bindings::test::extra_import::clock::now()
    }
}

bindings::export!(Component with_types_in bindings);
