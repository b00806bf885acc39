wit_bindgen::generate!({
    inline: r#"
        package test:other;
        world other { export run: func(); }
    "#,
});

struct Other;

impl Guest for Other {
    fn run() {}
}

export!(Other);
