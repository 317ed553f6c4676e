//! The bindings generator (`--features bindgen`): Kotlin, Swift and Python
//! from the built library. See the crate README.

fn main() {
    uniffi::uniffi_bindgen_main()
}
