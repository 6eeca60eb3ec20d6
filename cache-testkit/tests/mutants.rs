//! The conformance suite is mutation-tested: every backend of the gallery
//! (`cache_testkit::mutants`: the `Reference` backend with one realistic
//! bug) must fail the suite, caught by the cases named here; the
//! `Reference` itself must pass; and every case must catch at least one
//! mutant (or be listed with the reason no mutant can exist).
//!
//! How this could fail: a case weakened (an `>=` where `==` belongs, a
//! check dropped, a skip the capabilities do not justify) lets its mutant
//! pass, and `mutant_<bug>` says which case no longer catches it; a new
//! case without a mutant fails `mutant_gallery_covers_every_case`; a new
//! mutant without a test here does not compile (`catchers` is an
//! exhaustive `match`).

use std::collections::BTreeSet;
use std::sync::Arc;

use cache_core::CacheBackend;
use cache_testkit::mutants::{Mutant, Reference};
use cache_testkit::{case_names, run_all, run_all_concurrently, Report};

/// Cases that no realistic single bug can fail, with the reason. Empty: the
/// gallery has a mutant for every case.
const NO_MUTANT: &[(&str, &str)] = &[];

/// The suite on fresh backends with `mutant`'s bug, 16 cases at a time.
async fn report_for(mutant: Mutant) -> Report {
    run_all_concurrently(move || async move { mutant.backend() }, 16).await
}

/// Asserts that the suite fails `mutant`, in (at least) every case of
/// `cases`.
async fn killed(mutant: Mutant, cases: &[&str]) {
    let report = report_for(mutant).await;
    assert!(
        !report.failed.is_empty(),
        "the suite passed the mutant {mutant:?}:\n{report}"
    );
    for case in cases {
        assert!(
            report.failed(case),
            "{case} must catch the mutant {mutant:?}; the suite said:\n{report}"
        );
    }
}

macro_rules! gallery_tests {
    ($($test:ident: $variant:ident => [$($case:literal),+],)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                killed(Mutant::$variant, &[$($case),+]).await;
            }
        )+

        /// The cases expected to catch each mutant.
        fn catchers(mutant: Mutant) -> &'static [&'static str] {
            match mutant {
                $(Mutant::$variant => &[$($case),+],)+
            }
        }

        /// Each test's name and its mutant.
        const TESTS: &[(&str, Mutant)] = &[$((stringify!($test), Mutant::$variant)),+];
    };
}

gallery_tests! {
    // keys
    mutant_expire_accepts_empty_key: ExpireAcceptsEmptyKey => ["empty_key_is_invalid"],
    mutant_delete_many_skips_empty_keys: DeleteManySkipsEmptyKeys => ["empty_key_is_invalid"],
    mutant_exists_accepts_oversize_key: ExistsAcceptsOversizeKey => ["oversize_key_is_invalid"],
    mutant_ttl_accepts_oversize_key: TtlAcceptsOversizeKey => ["oversize_key_is_invalid"],
    mutant_get_allows_one_byte_too_many: GetAllowsOneByteTooMany => ["oversize_key_is_invalid"],
    mutant_capabilities_overstate_key_len: CapabilitiesOverstateKeyLen => ["capabilities_are_consistent"],
    mutant_non_ascii_keys_collide: NonAsciiKeysCollide => ["unicode_keys"],
    mutant_scan_accepts_empty_pattern: ScanAcceptsEmptyPattern => ["empty_pattern_is_invalid"],
    mutant_delete_matching_accepts_long_patterns: DeleteMatchingAcceptsLongPatterns => ["oversize_pattern_is_invalid"],
    mutant_scan_limits_patterns_to_key_len: ScanLimitsPatternsToKeyLen => ["oversize_pattern_is_invalid"],
    // values
    mutant_empty_value_is_miss: EmptyValueIsMiss => ["empty_value_is_a_hit"],
    mutant_values_stored_as_text: ValuesStoredAsText => ["binary_value_with_nul_bytes"],
    mutant_set_truncates_at_512_kib: SetTruncatesAt512Kib => ["large_value_1mib", "oversize_value_is_invalid"],
    mutant_oversize_value_accepted: OversizeValueAccepted => ["oversize_value_is_invalid"],
    mutant_value_limit_off_by_one: ValueLimitOffByOne => ["oversize_value_is_invalid"],
    mutant_set_writes_in_two_steps: SetWritesInTwoSteps => ["concurrent_writers_leave_one_value"],
    // reads and writes
    mutant_miss_is_an_error: MissIsAnError => ["get_missing_returns_none"],
    mutant_get_now_always_misses: GetNowAlwaysMisses => ["get_now_agrees_with_get"],
    mutant_get_now_joined_drops_the_head: GetNowJoinedDropsTheHead => ["get_now_joined_agrees_with_get"],
    mutant_set_reports_false: SetReportsFalse => ["set_then_get_returns_value", "set_overwrites_value"],
    mutant_set_never_overwrites: SetNeverOverwrites => ["set_overwrites_value"],
    mutant_set_keeps_old_ttl: SetKeepsOldTtl => ["set_without_ttl_clears_previous_ttl"],
    mutant_get_many_hits_first: GetManyHitsFirst => ["get_many_preserves_order_and_missing"],
    mutant_get_many_of_no_keys_fails: GetManyOfNoKeysFails => ["get_many_empty_is_empty"],
    mutant_set_many_drops_last: SetManyDropsLast => ["set_many_then_get_many"],
    mutant_set_many_ignores_ttl: SetManyIgnoresTtl => ["set_many_with_ttl_expires"],
    mutant_set_many_zero_ttl_stores_forever: SetManyZeroTtlStoresForever => ["set_many_zero_ttl_does_not_store"],
    mutant_set_if_absent_overwrites: SetIfAbsentOverwrites => ["set_if_absent_does_not_overwrite", "set_if_absent_race_has_one_winner"],
    mutant_set_if_absent_check_then_set: SetIfAbsentCheckThenSet => ["set_if_absent_race_has_one_winner"],
    mutant_set_if_absent_reply_inverted: SetIfAbsentReplyInverted => ["set_if_absent_on_missing_stores", "set_if_absent_does_not_overwrite"],
    mutant_set_if_absent_sees_expired: SetIfAbsentSeesExpired => ["set_if_absent_after_expiry_stores"],
    mutant_zero_ttl_stores_forever: ZeroTtlStoresForever => ["set_zero_ttl_does_not_store", "set_zero_ttl_removes_existing"],
    mutant_zero_ttl_set_returns_true: ZeroTtlSetReturnsTrue => ["set_zero_ttl_does_not_store", "set_zero_ttl_removes_existing"],
    mutant_zero_ttl_removes_in_every_mode: ZeroTtlRemovesInEveryMode => ["set_if_absent_zero_ttl_keeps_existing"],
    mutant_delete_always_true: DeleteAlwaysTrue => ["delete_missing_returns_false"],
    mutant_delete_reports_false: DeleteReportsFalse => ["delete_existing_returns_true"],
    mutant_delete_many_counts_keys_given: DeleteManyCountsKeysGiven => ["delete_many_counts_existing"],
    mutant_exists_needs_two: ExistsNeedsTwo => ["exists_reflects_presence"],
    // TTLs and expiry
    mutant_set_ttl_millis_as_seconds: SetTtlMillisAsSeconds => ["ttl_reports_remaining", "ttl_expires_value"],
    mutant_set_ttl_in_whole_seconds: SetTtlInWholeSeconds => ["sub_second_ttl_is_honoured", "ttl_reports_remaining"],
    mutant_missing_ttl_becomes_default: MissingTtlBecomesDefault => ["ttl_none_persists", "ttl_of_persistent_is_persistent"],
    mutant_ttl_floors_to_seconds: TtlFloorsToSeconds => ["ttl_reports_remaining"],
    mutant_ttl_reports_original: TtlReportsOriginal => ["ttl_expires_value"],
    mutant_ttl_of_missing_is_persistent: TtlOfMissingIsPersistent => ["ttl_of_missing_is_missing"],
    mutant_ttl_of_persistent_is_missing: TtlOfPersistentIsMissing => ["ttl_of_persistent_is_persistent"],
    mutant_exists_ignores_expiry: ExistsIgnoresExpiry => ["exists_false_after_expiry"],
    mutant_ttl_ignores_expiry: TtlIgnoresExpiry => ["exists_false_after_expiry"],
    mutant_get_many_ignores_expiry: GetManyIgnoresExpiry => ["expired_key_is_missing_everywhere"],
    mutant_scan_lists_expired: ScanListsExpired => ["expired_key_is_missing_everywhere"],
    mutant_delete_matching_counts_expired: DeleteMatchingCountsExpired => ["expired_key_is_missing_everywhere"],
    mutant_expire_millis_as_seconds: ExpireMillisAsSeconds => ["expire_sets_ttl"],
    mutant_expire_missing_returns_true: ExpireMissingReturnsTrue => ["expire_missing_returns_false"],
    mutant_expire_none_answers_like_persist: ExpireNoneAnswersLikePersist => ["expire_none_persists"],
    mutant_expire_zero_removes_ttl: ExpireZeroRemovesTtl => ["expire_zero_deletes"],
    // incr
    mutant_incr_stores_binary: IncrStoresBinary => ["incr_missing_creates_with_delta_and_ttl"],
    mutant_incr_creates_without_ttl: IncrCreatesWithoutTtl => ["incr_missing_creates_with_delta_and_ttl"],
    mutant_incr_resets_ttl: IncrResetsTtl => ["incr_existing_adds_and_keeps_ttl"],
    mutant_incr_adds_abs_delta: IncrAddsAbsDelta => ["incr_negative_delta"],
    mutant_incr_lenient_parse: IncrLenientParse => ["incr_non_integer_is_invalid_value"],
    mutant_incr_wraps: IncrWraps => ["incr_overflow_is_invalid_value"],
    mutant_incr_reads_then_writes: IncrReadsThenWrites => ["incr_concurrent_is_atomic"],
    // patterns and clear
    mutant_scan_repeats_keys: ScanRepeatsKeys => ["scan_lists_matching_keys"],
    mutant_star_stops_at_colons: StarStopsAtColons => ["delete_matching_star"],
    mutant_question_mark_matches_any_run: QuestionMarkMatchesAnyRun => ["delete_matching_question_mark"],
    mutant_class_negation_ignored: ClassNegationIgnored => ["delete_matching_character_classes"],
    mutant_delete_matching_ignores_escapes: DeleteMatchingIgnoresEscapes => ["delete_matching_escaped_metacharacters"],
    mutant_matching_ignores_case: MatchingIgnoresCase => ["delete_matching_leaves_other_namespaces"],
    mutant_clear_unescaped: ClearUnescaped => ["clear_namespace_is_literal"],
    mutant_clear_counts_batches: ClearCountsBatches => ["clear_removes_only_namespace"],
    mutant_clear_empty_namespace_clears_all: ClearEmptyNamespaceClearsAll => ["clear_empty_namespace_is_invalid"],
    mutant_hides_pattern_delete: HidesPatternDelete => ["capabilities_are_consistent"],
    // the rest
    mutant_health_degraded_when_empty: HealthDegradedWhenEmpty => ["health_reports_healthy"],
    mutant_empty_name: EmptyName => ["name_is_not_empty"],
}

/// The base of every mutant passes, case by case, one after the other (the
/// plain `run_all`): a failure of a mutant is its bug, not the reference's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutant_free_reference_passes_the_suite() {
    let report = run_all(|| async { Arc::new(Reference::new()) as Arc<dyn CacheBackend> }).await;
    report.assert_passed();
    assert!(report.skipped.is_empty(), "{report}");
    assert_eq!(report.passed.len(), case_names().len(), "{report}");
}

/// Every case catches at least one mutant (by the tests above, each of which
/// checks its catchers really fail), or is listed in `NO_MUTANT` with a
/// reason; each mutant has its `mutant_<name>` test.
#[test]
fn mutant_gallery_covers_every_case() {
    let cases: BTreeSet<&str> = case_names().into_iter().collect();
    let caught: BTreeSet<&str> = Mutant::ALL
        .iter()
        .flat_map(|m| catchers(*m).iter().copied())
        .collect();
    let unknown: Vec<&&str> = caught.difference(&cases).collect();
    assert!(
        unknown.is_empty(),
        "catchers that are not cases: {unknown:?}"
    );
    for (case, why) in NO_MUTANT {
        assert!(cases.contains(case), "{case} in NO_MUTANT is not a case");
        assert!(
            !caught.contains(case),
            "{case} has a mutant: take it out of NO_MUTANT"
        );
        assert!(!why.is_empty(), "{case} in NO_MUTANT needs a reason");
    }
    let exempt: BTreeSet<&str> = NO_MUTANT.iter().map(|(c, _)| *c).collect();
    let uncaught: Vec<&&str> = cases
        .iter()
        .filter(|c| !caught.contains(*c) && !exempt.contains(*c))
        .collect();
    assert!(
        uncaught.is_empty(),
        "cases that catch no mutant (add one to cache_testkit::mutants, or a reason to NO_MUTANT): {uncaught:?}"
    );
    assert_eq!(TESTS.len(), Mutant::ALL.len(), "a mutant without a test");
    for (test, mutant) in TESTS {
        assert_eq!(
            *test,
            format!("mutant_{}", mutant.name()),
            "test name of {mutant:?}"
        );
    }
    assert!(Mutant::ALL.len() >= 25);
}
