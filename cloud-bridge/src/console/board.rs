//! The alarm board and the alarm's article, as HTML.
