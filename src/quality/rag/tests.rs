use std::path::Path;

use super::*;

fn spec(accuracy_min: f64) -> RagSpec {
    let t = format!(
        "name,model,num_ctx,fill,questions,top_k,num_batch,num_thread,accuracy_min,ttft_max_s\n\
         a,m,4K,0.75,10,2,512,2,{accuracy_min},30\n"
    );
    table::parse(Path::new("rag.csv"), &t, 80.0)
        .unwrap()
        .remove(0)
}

fn answer(i: u32, a: Approach, q: u32, correct: Option<bool>, ttft: f64) -> AnswerRecord {
    AnswerRecord {
        index: i,
        approach: a,
        question: q,
        document: q,
        depth: 0.5,
        expected: "1234567".into(),
        answer: String::new(),
        correct,
        failure: correct.is_none().then(|| "HTTP 500".to_string()),
        retrieved: if a.retrieves() { vec![q] } else { Vec::new() },
        recalled: a.retrieves().then_some(!q.is_multiple_of(5)),
        ram_delta_bytes: Some(1_000_000),
        trial: TrialRecord {
            ttft_s: correct.map(|_| ttft),
            prompt_tokens_evaluated: correct.map(|_| if a.retrieves() { 500 } else { 3000 }),
            ..TrialRecord::default()
        },
    }
}

/// `n` questions, direct right on `direct_right` of them, BM25 RAG on `rag_right`; TTFTs around
/// `direct_ttft` and `rag_ttft`, with a little spread.
fn answers(
    n: u32,
    direct_right: u32,
    rag_right: u32,
    direct_ttft: f64,
    rag_ttft: f64,
) -> Vec<AnswerRecord> {
    let mut out = Vec::new();
    for q in 0..n {
        let jitter = f64::from(q % 3) * 0.05;
        out.push(answer(
            out.len() as u32,
            Approach::Direct,
            q,
            Some(q < direct_right),
            direct_ttft + jitter,
        ));
        out.push(answer(
            out.len() as u32,
            Approach::RagBm25,
            q,
            Some(q < rag_right),
            rag_ttft + jitter,
        ));
    }
    out
}

#[test]
fn a_significant_accuracy_gap_decides_before_latency() {
    // Direct 19/20 right but slow; RAG 6/20 and fast: accuracy first.
    let a = analyse(&answers(20, 19, 6, 8.0, 1.0));
    let c = a.comparison.as_ref().unwrap();
    assert_eq!(
        (c.winner, c.runner_up, c.decided_by, c.significant),
        (
            Approach::Direct,
            Approach::RagBm25,
            DecidedBy::Accuracy,
            true
        )
    );
    let t = c.accuracy_test.as_ref().unwrap();
    assert!(
        t.p_value < ALPHA && (t.difference - 0.65).abs() < 1e-9,
        "{t:?}"
    );
    assert!(
        c.summary
            .starts_with("direct wins on accuracy: 95 % against rag_bm25's 30 %"),
        "{}",
        c.summary
    );
    let d = a.arm(Approach::Direct).unwrap();
    assert_eq!((d.correct, d.answered, d.asked), (19, 20, 20));
    assert_eq!(d.accuracy_ci, stats::wilson(19, 20));
    assert_eq!(d.recall, None);
    let r = a.arm(Approach::RagBm25).unwrap();
    assert_eq!(r.recalled, Some(16), "questions 0, 5, 10, 15 not retrieved");
    assert_eq!(r.recall, Some(0.8));
    assert_eq!(r.prompt_tokens.as_ref().map(|s| s.mean), Some(500.0));
}

#[test]
fn equal_accuracy_leaves_it_to_latency() {
    // Both 15/20 right: RAG's shorter prefill wins, significantly.
    let a = analyse(&answers(20, 15, 15, 8.0, 1.0));
    let c = a.comparison.as_ref().unwrap();
    assert_eq!(
        (c.winner, c.decided_by, c.significant),
        (Approach::RagBm25, DecidedBy::Latency, true)
    );
    assert!(c.latency_test.as_ref().unwrap().p_value < ALPHA);
    assert_eq!(c.agreement, Some(1.0));
    // A small accuracy gap (16 against 14 of 20) is not significant: latency still decides,
    // here for direct, the faster one, but without significance at equal latency.
    let a = analyse(&answers(20, 16, 14, 2.0, 2.0));
    let c = a.comparison.as_ref().unwrap();
    assert_eq!(c.decided_by, DecidedBy::Latency);
    assert!(!c.significant, "{}", c.summary);
    assert_eq!(
        c.winner,
        Approach::Direct,
        "more accurate when latency ties"
    );
    assert!(c.summary.contains("not significant"), "{}", c.summary);
    assert_eq!(c.agreement, Some(18.0 / 20.0));
}

#[test]
fn verdicts_follow_the_winners_accuracy_direct_ttft_and_failures() {
    let hw = HardwareSummary::default();
    let facts = QualityFacts::default();
    let s = spec(0.5);
    let good = answers(10, 9, 9, 5.0, 1.0);
    let a = analyse(&good);
    let j = judge(&s, &a, &good, &hw, &facts);
    assert_eq!(j.verdict, Verdict::Pass, "{:?} {:?}", j.reasons(), j.checks);
    // Nobody finds anything: the winner's accuracy fails its gate.
    let bad = answers(10, 0, 0, 5.0, 1.0);
    let a = analyse(&bad);
    let j = judge(&s, &a, &bad, &hw, &facts);
    assert_eq!(j.verdict, Verdict::Fail);
    assert_eq!(j.failed_gates(), vec![Gate::Accuracy]);
    // Direct prompting over the TTFT limit.
    let slow = answers(10, 9, 9, 50.0, 1.0);
    let a = analyse(&slow);
    let j = judge(&s, &a, &slow, &hw, &facts);
    assert_eq!(j.failed_gates(), vec![Gate::Ttft]);
    // RAG requests failing: too few answers in one approach is INVALID.
    let mut failed = answers(10, 9, 9, 5.0, 1.0);
    for r in failed
        .iter_mut()
        .filter(|r| r.approach == Approach::RagBm25)
    {
        *r = answer(r.index, Approach::RagBm25, r.question, None, 0.0);
    }
    let a = analyse(&failed);
    let j = judge(&s, &a, &failed, &hw, &facts);
    assert_eq!(j.verdict, Verdict::Invalid);
    assert!(
        j.reasons()
            .iter()
            .any(|r| r.contains("rag_bm25: 0 of 10 questions answered"))
            && j.invalid_trials[0].reason == "rag_bm25: HTTP 500",
        "{:?}",
        j.reasons()
    );
    // A problem (a truncated prompt) is INVALID whatever the answers.
    let facts = QualityFacts {
        problems: vec!["direct prompt truncated".into()],
        notes: Vec::new(),
    };
    let a = analyse(&good);
    assert_eq!(judge(&s, &a, &good, &hw, &facts).verdict, Verdict::Invalid);
}

#[test]
fn one_approach_alone_is_no_comparison() {
    let only: Vec<AnswerRecord> = answers(6, 5, 5, 2.0, 1.0)
        .into_iter()
        .filter(|r| r.approach == Approach::Direct)
        .collect();
    let a = analyse(&only);
    assert!(a.comparison.is_none());
    let j = judge(
        &spec(0.5),
        &a,
        &only,
        &HardwareSummary::default(),
        &QualityFacts::default(),
    );
    assert_eq!(j.verdict, Verdict::Invalid);
}

#[test]
fn a_skipped_test_is_skipped() {
    let r = assemble(
        &spec(0.5),
        RagRun::Skipped {
            meta: Box::default(),
            why: "model m is not pulled".into(),
        },
        0.1,
    );
    assert_eq!(r.verdict(), Verdict::Skipped);
    assert!(r.answers.is_empty());
}

#[test]
fn wrong_answers_cut_by_num_predict_are_noted() {
    let mut a = answers(4, 2, 4, 2.0, 1.0);
    for r in &mut a {
        r.trial.done_reason = Some("length".into());
    }
    let r = assemble(
        &spec(0.1),
        RagRun::Ran(Box::new(RagRan {
            answers: a,
            documents: 4,
            ..RagRan::default()
        })),
        1.0,
    );
    assert!(
        r.judgement
            .notes
            .iter()
            .any(|n| n.starts_with("2 of 2 wrong answers stopped at num_predict 48")),
        "{:?}",
        r.judgement.notes
    );
}
