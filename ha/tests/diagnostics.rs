//! The common mistakes give compiler errors that name their cause.

#[test]
fn common_mistakes_are_explained() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
