wit_bindgen::generate!({
    inline: r#"
        package devbox:auth@0.3.0;
        interface log { log: func(message: string); }
        world policy {
            import log;
            export provision: func() -> result<_, string>;
        }
    "#,
});

struct FuturePolicy;

impl Guest for FuturePolicy {
    fn provision() -> Result<(), String> {
        devbox::auth::log::log("from the future");
        Ok(())
    }
}

export!(FuturePolicy);
