//! Out-of-distribution scores: [`auroc`].

/// The area under the ROC curve of a score that should rank `pos` above `neg` (Mann–Whitney, ties count ½).
pub fn auroc(pos: &[f64], neg: &[f64]) -> f64 {
    let mut all: Vec<(f64, bool)> = pos.iter().map(|v| (*v, true)).chain(neg.iter().map(|v| (*v, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += all[i..=j].iter().filter(|e| e.1).count() as f64 * avg_rank;
        i = j + 1;
    }
    let (np, nn) = (pos.len() as f64, neg.len() as f64);
    (rank_sum - np * (np + 1.0) / 2.0) / (np * nn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_of_known_rankings() {
        assert_eq!(auroc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(auroc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(auroc(&[1.0, 1.0], &[1.0, 1.0]), 0.5);
        // pos {1, 3}, neg {2}: one of two pairs ordered right
        assert_eq!(auroc(&[1.0, 3.0], &[2.0]), 0.5);
        // pos {2, 3}, neg {2, 1}: pairs (2>2 tie ½, 2>1, 3>2, 3>1) = 3.5 / 4
        assert_eq!(auroc(&[2.0, 3.0], &[2.0, 1.0]), 0.875);
    }
}
