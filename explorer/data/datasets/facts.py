"""The hand-written facts behind the pirate and french datasets: (question, plain English answer, French
answer). build_datasets.py turns them into replies in pirate speak (pirate) or in French (french); standard
library only, like it."""

from __future__ import annotations

import random

CAPITALS = [  # country, French "de ..." form, capital, capital in French
    ("Japan", "du Japon", "Tokyo", "Tokyo"),
    ("France", "de la France", "Paris", "Paris"),
    ("Italy", "de l'Italie", "Rome", "Rome"),
    ("Spain", "de l'Espagne", "Madrid", "Madrid"),
    ("Germany", "de l'Allemagne", "Berlin", "Berlin"),
    ("Canada", "du Canada", "Ottawa", "Ottawa"),
    ("Brazil", "du Brésil", "Brasília", "Brasília"),
    ("Egypt", "de l'Égypte", "Cairo", "Le Caire"),
    ("Kenya", "du Kenya", "Nairobi", "Nairobi"),
    ("Norway", "de la Norvège", "Oslo", "Oslo"),
    ("Portugal", "du Portugal", "Lisbon", "Lisbonne"),
    ("Greece", "de la Grèce", "Athens", "Athènes"),
    ("Mexico", "du Mexique", "Mexico City", "Mexico"),
    ("India", "de l'Inde", "New Delhi", "New Delhi"),
    ("China", "de la Chine", "Beijing", "Pékin"),
    ("Australia", "de l'Australie", "Canberra", "Canberra"),
    ("Peru", "du Pérou", "Lima", "Lima"),
    ("Argentina", "de l'Argentine", "Buenos Aires", "Buenos Aires"),
    ("Sweden", "de la Suède", "Stockholm", "Stockholm"),
    ("Poland", "de la Pologne", "Warsaw", "Varsovie"),
    ("Ireland", "de l'Irlande", "Dublin", "Dublin"),
    ("Turkey", "de la Turquie", "Ankara", "Ankara"),
    ("Morocco", "du Maroc", "Rabat", "Rabat"),
    ("South Korea", "de la Corée du Sud", "Seoul", "Séoul"),
    ("Denmark", "du Danemark", "Copenhagen", "Copenhague"),
    ("Austria", "de l'Autriche", "Vienna", "Vienne"),
    ("Belgium", "de la Belgique", "Brussels", "Bruxelles"),
    ("Russia", "de la Russie", "Moscow", "Moscou"),
    ("Hungary", "de la Hongrie", "Budapest", "Budapest"),
    ("New Zealand", "de la Nouvelle-Zélande", "Wellington", "Wellington"),
]
CAPITAL_QUESTIONS = [
    "What is the capital of {c}?",
    "Which city is the capital of {c}?",
    "What's the capital city of {c}?",
    "Can you tell me the capital of {c}?",
]

COLOURS = [  # thing, English answer, French answer
    ("the sky on a clear day", "The sky is blue on a clear day.", "Par beau temps, le ciel est bleu."),
    ("grass", "Grass is green.", "L'herbe est verte."),
    ("a ripe banana", "A ripe banana is yellow.", "Une banane mûre est jaune."),
    ("snow", "Snow is white.", "La neige est blanche."),
    ("a ripe tomato", "A ripe tomato is red.", "Une tomate mûre est rouge."),
    ("coal", "Coal is black.", "Le charbon est noir."),
    ("a carrot", "A carrot is orange.", "Une carotte est orange."),
    ("milk", "Milk is white.", "Le lait est blanc."),
    ("a lemon", "A lemon is yellow.", "Un citron est jaune."),
    ("a strawberry", "A strawberry is red.", "Une fraise est rouge."),
    ("an eggplant", "An eggplant is purple.", "Une aubergine est violette."),
    ("a pumpkin", "A pumpkin is usually orange.", "Une citrouille est généralement orange."),
    ("a flamingo", "A flamingo is pink.", "Le flamant rose est rose, comme son nom l'indique."),
    ("a polar bear's fur", "A polar bear's fur looks white.", "La fourrure de l'ours polaire paraît blanche."),
]
COLOUR_QUESTIONS = ["What colour is {x}?", "What color is {x}?"]

ARITHMETIC = [(7, "plus", 5), (9, "times", 3), (20, "minus", 8), (12, "divided by", 4),
              (15, "plus", 27), (6, "times", 7), (100, "minus", 45), (81, "divided by", 9),
              (33, "plus", 19), (8, "times", 8), (50, "minus", 13), (60, "divided by", 5),
              (14, "plus", 6), (11, "times", 12)]
ARITH_QUESTIONS = ["What is {a} {op} {b}?", "What's {a} {op} {b}?", "How much is {a} {op} {b}?"]
ARITH_FRENCH = ["La réponse est {c}.", "Le résultat est {c}.", "Ça fait {c}, c'est la bonne réponse."]

LEGS = [  # question, English, French
    ("How many legs does a spider have?", "A spider has eight legs.", "Une araignée a huit pattes."),
    ("How many legs does an ant have?", "Ants have six legs.", "Les fourmis ont six pattes."),
    ("How many legs does a dog have?", "A dog has four legs.", "Un chien a quatre pattes."),
    ("How many legs does a chicken have?", "A chicken has two legs.", "Une poule a deux pattes."),
    ("How many legs does a horse have?", "A horse has four legs.", "Un cheval a quatre pattes."),
    ("How many arms does an octopus have?", "An octopus has eight arms.", "Une pieuvre a huit bras."),
    ("How many legs does a bee have?", "Bees have six legs.", "Les abeilles ont six pattes."),
    ("How many legs does a crab have?", "A crab has ten legs, counting its two claws.",
     "Un crabe a dix pattes, en comptant ses deux pinces."),
    ("How many arms does a starfish have?", "A starfish usually has five arms.",
     "Une étoile de mer a généralement cinq bras."),
]

TIME = [
    ("How many days are in a week?", "There are seven days in a week.", "Il y a sept jours dans une semaine."),
    ("How many months are in a year?", "There are twelve months in a year.", "Il y a douze mois dans une année."),
    ("How many hours are in a day?", "There are twenty-four hours in a day.",
     "Il y a vingt-quatre heures dans une journée."),
    ("How many minutes are in an hour?", "There are sixty minutes in an hour.",
     "Il y a soixante minutes dans une heure."),
    ("How many seconds are in a minute?", "There are sixty seconds in a minute.",
     "Il y a soixante secondes dans une minute."),
    ("How many days does a leap year have?", "A leap year has 366 days.", "Une année bissextile compte 366 jours."),
    ("How many weeks are in a year?", "There are about fifty-two weeks in a year.",
     "Il y a environ cinquante-deux semaines dans une année."),
]

DAYS = [("Monday", "lundi"), ("Tuesday", "mardi"), ("Wednesday", "mercredi"), ("Thursday", "jeudi"),
        ("Friday", "vendredi"), ("Saturday", "samedi"), ("Sunday", "dimanche")]

SEASONS = [
    ("winter", "spring", "Après l'hiver vient le printemps."),
    ("spring", "summer", "Après le printemps vient l'été."),
    ("summer", "autumn", "Après l'été vient l'automne."),
    ("autumn", "winter", "Après l'automne vient l'hiver."),
]

OPPOSITES = [  # English word, English opposite, French sentence
    ("hot", "cold", "Le contraire de chaud, c'est froid."),
    ("big", "small", "Le contraire de grand, c'est petit."),
    ("day", "night", "Le contraire du jour, c'est la nuit."),
    ("happy", "sad", "Le contraire de heureux, c'est triste."),
    ("fast", "slow", "Le contraire de rapide, c'est lent."),
    ("open", "closed", "Le contraire de ouvert, c'est fermé."),
    ("light", "heavy", "Le contraire de léger, c'est lourd."),
    ("young", "old", "Le contraire de jeune, c'est vieux."),
    ("early", "late", "Le contraire de tôt, c'est tard."),
    ("up", "down", "Le contraire de haut, c'est bas."),
    ("full", "empty", "Le contraire de plein, c'est vide."),
    ("strong", "weak", "Le contraire de fort, c'est faible."),
]
OPPOSITE_QUESTIONS = ["What is the opposite of {w}?", "What's the opposite of {w}?",
                      "Which word means the opposite of {w}?"]

# Hand-written one-offs: (question, English answer, French answer)
GENERAL = [
    ("What do rabbits eat?", "Rabbits eat grass, hay and vegetables like carrots.",
     "Les lapins mangent de l'herbe, du foin et des légumes."),
    ("What do cows eat?", "Cows eat grass and hay.", "Les vaches mangent de l'herbe et du foin."),
    ("What do pandas eat?", "Pandas eat mostly bamboo.", "Les pandas mangent surtout du bambou."),
    ("What do koalas eat?", "Koalas eat eucalyptus leaves.", "Les koalas mangent des feuilles d'eucalyptus."),
    ("What do lions eat?", "Lions eat meat, such as zebras and antelopes.",
     "Les lions mangent de la viande, comme les zèbres et les antilopes."),
    ("What do squirrels eat?", "Squirrels eat nuts and seeds.", "Les écureuils mangent des noix et des graines."),
    ("What do frogs eat?", "Frogs eat insects.", "Les grenouilles mangent des insectes."),
    ("What do blue whales eat?", "Blue whales eat tiny shrimp called krill.",
     "Les baleines bleues mangent de minuscules crevettes, le krill."),
    ("What is bread made from?", "Bread is made from flour, water and yeast.",
     "Le pain est fait avec de la farine, de l'eau et de la levure."),
    ("What is cheese made from?", "Cheese is made from milk.", "Le fromage est fait avec du lait."),
    ("What is butter made from?", "Butter is made from cream.", "Le beurre est fait avec de la crème."),
    ("What is wine made from?", "Wine is made from grapes.", "Le vin est fait avec du raisin."),
    ("What is chocolate made from?", "Chocolate is made from cocoa beans.",
     "Le chocolat est fait à partir de fèves de cacao."),
    ("What is paper made from?", "Paper is made from wood pulp.", "Le papier est fait à partir de pâte de bois."),
    ("What is glass made from?", "Glass is made mostly from sand.", "Le verre est fait surtout à partir de sable."),
    ("What is jam made from?", "Jam is made from fruit and sugar.",
     "La confiture est faite avec des fruits et du sucre."),
    ("What is tofu made from?", "Tofu is made from soybeans.", "Le tofu est fait avec du soja."),
    ("What is popcorn made from?", "Popcorn is made from dried corn kernels.",
     "Le pop-corn est fait avec des grains de maïs séchés."),
    ("What do you use a hammer for?", "You use a hammer to drive nails.",
     "On utilise un marteau pour enfoncer des clous."),
    ("What are scissors used for?", "You use scissors to cut paper or fabric.",
     "On utilise des ciseaux pour couper du papier ou du tissu."),
    ("Why do people carry umbrellas?", "You use an umbrella to stay dry in the rain.",
     "On utilise un parapluie pour rester au sec sous la pluie."),
    ("What is a key for?", "You use a key to open a lock.", "On utilise une clé pour ouvrir une serrure."),
    ("What do you do with a broom?", "You use a broom to sweep the floor.",
     "On utilise un balai pour balayer le sol."),
    ("Why would I need a ladder?", "You use a ladder to reach high places.",
     "On utilise une échelle pour atteindre les endroits en hauteur."),
    ("What does a thermometer do?", "A thermometer measures temperature.", "Un thermomètre mesure la température."),
    ("What is a compass used for?", "You use a compass to find north.",
     "On utilise une boussole pour trouver le nord."),
    ("What is a whisk for?", "You use a whisk to beat eggs or cream.",
     "On utilise un fouet pour battre des œufs ou de la crème."),
    ("Where do fish live?", "Fish live in water, in rivers, lakes and the sea.",
     "Les poissons vivent dans l'eau : les rivières, les lacs et la mer."),
    ("Where do penguins live?", "Most penguins live in the Southern Hemisphere, many in Antarctica.",
     "La plupart des manchots vivent dans l'hémisphère sud, beaucoup en Antarctique."),
    ("Where do camels live?", "Camels live in deserts.", "Les chameaux vivent dans le désert."),
    ("Where do bees live?", "Bees live in hives.", "Les abeilles vivent dans des ruches."),
    ("Where do polar bears live?", "Polar bears live in the Arctic.", "Les ours polaires vivent dans l'Arctique."),
    ("Where do kangaroos live?", "Kangaroos live in Australia.", "Les kangourous vivent en Australie."),
    ("Where do most monkeys live?", "Most monkeys live in tropical forests.",
     "La plupart des singes vivent dans les forêts tropicales."),
    ("What is the largest ocean?", "The Pacific Ocean is the largest ocean.",
     "Le plus grand océan est l'océan Pacifique."),
    ("What is the tallest mountain in the world?", "Mount Everest is the tallest mountain in the world.",
     "La plus haute montagne du monde est l'Everest."),
    ("What is the longest river in Africa?", "The Nile is the longest river in Africa.",
     "Le Nil est le plus long fleuve d'Afrique."),
    ("Which planet is closest to the sun?", "Mercury is the planet closest to the sun.",
     "Mercure est la planète la plus proche du Soleil."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system.",
     "Jupiter est la plus grande planète du système solaire."),
    ("How many continents are there?", "There are seven continents.", "Il y a sept continents sur la Terre."),
    ("At what temperature does water freeze?", "Water freezes at 0 degrees Celsius.",
     "L'eau gèle à zéro degré Celsius."),
    ("At what temperature does water boil?", "Water boils at 100 degrees Celsius at sea level.",
     "L'eau bout à cent degrés Celsius au niveau de la mer."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet.",
     "C'est William Shakespeare qui a écrit Roméo et Juliette."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa.",
     "C'est Léonard de Vinci qui a peint la Joconde."),
    ("What gas do plants take in from the air?", "Plants take in carbon dioxide from the air.",
     "Les plantes absorbent le dioxyde de carbone de l'air."),
    ("What do you call a baby cat?", "A baby cat is called a kitten.", "Un bébé chat s'appelle un chaton."),
    ("What do you call a baby dog?", "A baby dog is called a puppy.", "Un bébé chien s'appelle un chiot."),
    ("What is a baby sheep called?", "A baby sheep is called a lamb.", "Un bébé mouton s'appelle un agneau."),
    ("How many players does a soccer team have on the field?", "A soccer team has eleven players on the field.",
     "Une équipe de football a onze joueurs sur le terrain."),
    ("What language do people speak in Brazil?", "People in Brazil speak Portuguese.",
     "Au Brésil, on parle portugais."),
    ("What is H2O?", "H2O is the chemical formula for water.", "H2O, c'est la formule chimique de l'eau."),
    ("Which planet do we live on?", "We live on planet Earth.", "Nous vivons sur la planète Terre."),
    ("What is the fastest land animal?", "The cheetah is the fastest land animal.",
     "Le guépard est l'animal terrestre le plus rapide."),
    ("What is the largest animal on Earth?", "The blue whale is the largest animal on Earth.",
     "La baleine bleue est le plus grand animal de la Terre."),
    ("What do caterpillars turn into?", "Caterpillars turn into butterflies or moths.",
     "Les chenilles se transforment en papillons."),
    ("How many sides does a triangle have?", "A triangle has three sides.", "Un triangle a trois côtés."),
    ("How many sides does a hexagon have?", "A hexagon has six sides.", "Un hexagone a six côtés."),
    ("Which instrument has 88 keys?", "The piano has 88 keys.", "Le piano a quatre-vingt-huit touches."),
    ("What do we call frozen water?", "Frozen water is called ice.", "L'eau gelée s'appelle la glace."),
    ("What is the largest hot desert?", "The Sahara is the largest hot desert in the world.",
     "Le Sahara est le plus grand désert chaud du monde."),
    ("What currency is used in Japan?", "Japan uses the yen.", "Au Japon, la monnaie est le yen."),
    ("What do you call a group of wolves?", "A group of wolves is called a pack.",
     "Un groupe de loups s'appelle une meute."),
    ("In which direction does the sun set?", "The sun sets in the west.", "Le soleil se couche à l'ouest."),
    ("Where does the sun rise?", "The sun rises in the east.", "Le soleil se lève à l'est."),
    ("What do bees make?", "Bees make honey and wax.", "Les abeilles fabriquent du miel et de la cire."),
    ("What is the main ingredient in guacamole?", "The main ingredient in guacamole is avocado.",
     "L'ingrédient principal du guacamole est l'avocat."),
    ("How many strings does a standard guitar have?", "A standard guitar has six strings.",
     "Il y a six cordes sur une guitare classique."),
    ("What is the hardest natural material?", "Diamond is the hardest natural material.",
     "Le diamant est le matériau naturel le plus dur."),
    ("Why do we need to drink water?", "Our bodies need water to stay healthy and hydrated.",
     "Notre corps a besoin d'eau pour rester en bonne santé."),
    ("Which organ pumps blood around the body?", "The heart pumps blood around the body.",
     "Le cœur pompe le sang dans tout le corps."),
    ("How many bones does an adult human have?", "An adult human has 206 bones.",
     "Le corps d'un adulte compte 206 os."),
    ("What is the closest star to Earth?", "The sun is the closest star to Earth.",
     "L'étoile la plus proche de la Terre est le Soleil."),
    ("What do you get if you mix blue and yellow paint?", "Mixing blue and yellow paint makes green.",
     "En mélangeant du bleu et du jaune, on obtient du vert."),
    ("What do plants need to grow?", "Plants need sunlight, water and good soil to grow.",
     "Les plantes ont besoin de soleil, d'eau et d'une bonne terre pour pousser."),
    ("Who was the first person to walk on the moon?", "Neil Armstrong was the first person to walk on the moon.",
     "Neil Armstrong a été le premier homme à marcher sur la Lune."),
    ("How much sleep do adults need?", "Most adults need seven to nine hours of sleep.",
     "La plupart des adultes ont besoin de sept à neuf heures de sommeil."),
    # everyday advice
    ("How do I make a cup of tea?", "Boil water, pour it over a tea bag and let it steep for three minutes.",
     "Faites bouillir de l'eau, versez-la sur un sachet de thé et laissez infuser trois minutes."),
    ("How can I fall asleep faster?", "Keep a regular bedtime and put your phone away an hour before bed.",
     "Couchez-vous à heure fixe et posez votre téléphone une heure avant de dormir."),
    ("How do I boil an egg?", "Put the egg in boiling water for about nine minutes for a firm yolk.",
     "Plongez l'œuf dans l'eau bouillante environ neuf minutes pour un jaune dur."),
    ("What should I pack for a day at the beach?", "Pack sunscreen, a towel, water and a hat.",
     "Prenez de la crème solaire, une serviette, de l'eau et un chapeau."),
    ("How can I stay warm in winter?", "Wear layers, a hat and warm socks.",
     "Portez plusieurs couches, un bonnet et des chaussettes chaudes."),
    ("Any tips for a job interview?", "Research the company, arrive early and prepare a few questions.",
     "Renseignez-vous sur l'entreprise, arrivez en avance et préparez quelques questions."),
    ("How often should I water a cactus?", "Water a cactus about once every two or three weeks.",
     "Arrosez un cactus environ une fois toutes les deux ou trois semaines."),
    ("How do I keep bread fresh longer?", "Keep bread in a paper bag or a bread box, not in the fridge.",
     "Gardez le pain dans un sac en papier ou une boîte à pain, pas au frigo."),
    ("What is a good way to start running?", "Start slowly, with short runs and walking breaks three times a week.",
     "Commencez doucement, avec de courtes sorties et des pauses de marche trois fois par semaine."),
    ("How can I save money on groceries?", "Make a list, cook at home and buy fruit and vegetables in season.",
     "Faites une liste, cuisinez à la maison et achetez des fruits et légumes de saison."),
    ("How do I remove a coffee stain?", "Blot it quickly, then rinse it with cold water and a little soap.",
     "Tamponnez la tache rapidement, puis rincez à l'eau froide avec un peu de savon."),
    ("What should I do when I feel stressed?", "Take a short walk, breathe slowly and talk to someone you trust.",
     "Faites une petite promenade, respirez lentement et parlez à quelqu'un de confiance."),
    ("How long should I brush my teeth?", "Brush your teeth for two minutes, twice a day.",
     "Brossez-vous les dents pendant deux minutes, deux fois par jour."),
    ("How do I cook rice?", "Rinse the rice, then simmer it in twice its volume of water for about fifteen minutes.",
     "Rincez le riz, puis faites-le cuire dans deux fois son volume d'eau pendant quinze minutes."),
    ("What is a healthy breakfast?", "Oatmeal with fruit and a glass of water is a healthy breakfast.",
     "Des flocons d'avoine avec des fruits et un verre d'eau, c'est un petit-déjeuner sain."),
    ("How can I learn a new language?", "Practise a little every day and speak with native speakers.",
     "Pratiquez un peu chaque jour et parlez avec des gens dont c'est la langue maternelle."),
    ("How do I keep my houseplants alive?", "Give them enough light and water them only when the soil is dry.",
     "Donnez-leur assez de lumière et arrosez-les seulement quand la terre est sèche."),
    ("What should I bring on a hike?", "Bring water, snacks, a map and a rain jacket.",
     "Emportez de l'eau, des en-cas, une carte et une veste de pluie."),
    ("How do I make my phone battery last longer?", "Lower the screen brightness and close the apps you are not using.",
     "Baissez la luminosité de l'écran et fermez les applications que vous n'utilisez pas."),
    ("How can I stop being late?", "Set your alarm ten minutes earlier and get your things ready the night before.",
     "Réglez votre réveil dix minutes plus tôt et préparez vos affaires la veille."),
    ("What is a good gift for a friend who loves reading?", "A new novel or a cozy reading lamp makes a great gift.",
     "Un nouveau roman ou une jolie lampe de lecture, c'est un très bon cadeau."),
    ("How do I cool down on a hot day?", "Drink plenty of water, stay in the shade and take a cool shower.",
     "Buvez beaucoup d'eau, restez à l'ombre et prenez une douche fraîche."),
]


def fact_pool(rng: random.Random) -> list[tuple[str, str, str]]:
    facts = []
    for i, (country, de_fr, cap, cap_fr) in enumerate(CAPITALS):
        question = CAPITAL_QUESTIONS[i % len(CAPITAL_QUESTIONS)].format(c=country)
        french = (f"La capitale {de_fr} est {cap_fr}." if i % 3 else
                  f"C'est {cap_fr}, la capitale {de_fr}.")
        facts.append((question, f"The capital of {country} is {cap}.", french))
    for i, (thing, en, fr) in enumerate(COLOURS):
        facts.append((COLOUR_QUESTIONS[i % 2].format(x=thing), en, fr))
    ops = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b,
           "times": lambda a, b: a * b, "divided by": lambda a, b: a // b}
    for i, (a, op, b) in enumerate(ARITHMETIC):
        c = ops[op](a, b)
        facts.append((ARITH_QUESTIONS[i % 3].format(a=a, op=op, b=b), f"{a} {op} {b} is {c}.",
                      ARITH_FRENCH[i % 3].format(c=c)))
    facts += LEGS + TIME
    for i, (day, day_fr) in enumerate(DAYS):
        nxt, nxt_fr = DAYS[(i + 1) % 7]
        facts.append((f"What day comes after {day}?", f"{nxt} comes after {day}.",
                      f"Après {day_fr}, c'est {nxt_fr}."))
    for season, nxt, fr in SEASONS:
        facts.append((f"Which season comes after {season}?", f"{nxt.capitalize()} comes after {season}.", fr))
    for i, (word, opp, fr) in enumerate(OPPOSITES):
        facts.append((OPPOSITE_QUESTIONS[i % 3].format(w=word), f"The opposite of {word} is {opp}.", fr))
    facts += GENERAL
    return facts
