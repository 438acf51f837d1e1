package httpx

import (
	"net/url"
	"strings"
)

// QueryValue is url.ParseQuery(rawQuery).Get(key) without building the
// map: the first value of key among the pairs ParseQuery keeps (a pair with
// a semicolon or a bad escape is skipped), unescaped; "" when none. Long
// queries go through url.ParseQuery itself (its limit on parameters).
func QueryValue(rawQuery, key string) string {
	if strings.Count(rawQuery, "&") >= 1000 {
		v, _ := url.ParseQuery(rawQuery)
		return v.Get(key)
	}
	for q := rawQuery; q != ""; {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if strings.ContainsAny(k, "%+") {
			var err error
			if k, err = url.QueryUnescape(k); err != nil {
				continue
			}
		}
		if k != key {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			var err error
			if v, err = url.QueryUnescape(v); err != nil {
				continue
			}
		}
		return v
	}
	return ""
}
