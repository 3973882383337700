"""The knowledge base: versioned articles (draft / internal / public) in categories, in Chinese and
English, searched with jieba tokens and BM25 (search.py, pure); store.py keeps them in PostgreSQL,
appliance/api/routes/kb.py serves them, and the voice bot answers FAQs from the public ones."""
